"""Pictures of a reply's targets over its image, for people to look at.

:func:`render` draws each target in its own colour, with a contour thick enough to see on a
word that covers 0.1 % of the image and a dot at its centre when it is smaller still, scales
small images up for viewing (a 256-px scene becomes 768 px; masks are scaled with the nearest
neighbour so their pixels stay exact), and adds a legend: one swatch per target with its
phrase and granularity. ``reply.overlay(image)`` and ``pixelagent segment --overlay`` use it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

#: Distinct colours, one per target in order (a colour-blind-friendly qualitative palette).
PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 25, 75), (0, 130, 200), (255, 190, 30), (60, 180, 75), (145, 30, 180),
    (245, 130, 48), (70, 240, 240), (240, 50, 230))
#: Images whose longer side is below this are scaled up (by a whole factor) before drawing.
MIN_SIDE = 640


@dataclass(frozen=True)
class Layer:
    """One target to draw: its mask, the legend label and, optionally, its granularity."""

    mask: Any  # pixelagent.Mask or a bool (H, W) array
    label: str
    granularity: str | None = None


def render(image: Any, layers: Sequence[Layer], alpha: float = 0.45, min_side: int = MIN_SIDE,
           legend: bool = True) -> Image.Image:
    """``image`` (anything ``load_image`` reads) with every layer drawn; a new RGB PIL image.

    The picture is ``scale`` times the image (``scale`` the smallest whole factor bringing the
    longer side to ``min_side``; 1 for large images) plus a legend strip below it.
    """
    from pixelagent.errors import MaskError
    from pixelagent.mask import _hw, _rgb

    pixels = _rgb(image)
    height, width = pixels.shape[:2]
    for layer in layers:
        shape = np.shape(layer.mask)
        if tuple(shape) != (height, width):
            raise MaskError(f"overlay image is {height}x{width} but the mask of {layer.label!r} is {_hw(shape)}; "
                            "pass the image the session was opened on")
    scale = max(1, -(-min_side // max(height, width)))
    canvas = np.repeat(np.repeat(pixels, scale, axis=0), scale, axis=1) if scale > 1 else pixels.copy()
    thickness = max(2, round(max(height, width) * scale / 320))
    for index, layer in enumerate(layers):
        colour = np.array(PALETTE[index % len(PALETTE)], dtype=np.float64)
        mask = np.asarray(layer.mask, dtype=bool)
        big = np.repeat(np.repeat(mask, scale, axis=0), scale, axis=1) if scale > 1 else mask
        canvas[big] = np.clip(np.rint((1 - alpha) * canvas[big] + alpha * colour), 0, 255).astype(np.uint8)
        canvas[_ring(big, thickness)] = colour.astype(np.uint8)
    picture = Image.fromarray(canvas)
    _mark_tiny(picture, layers, scale, thickness)
    return _with_legend(picture, layers) if legend and layers else picture


def _ring(mask: np.ndarray, thickness: int) -> np.ndarray:
    """Pixels within ``thickness`` of the mask's edge, inside and out (a contour that shows)."""
    outside = mask.copy()
    inside = mask.copy()
    for _ in range(thickness):
        outside = _dilate(outside)
        inside = ~_dilate(~inside)
    return outside & ~inside


def _dilate(mask: np.ndarray) -> np.ndarray:
    padded = np.pad(mask, 1, constant_values=False)
    return (padded[1:-1, 1:-1] | padded[:-2, 1:-1] | padded[2:, 1:-1] | padded[1:-1, :-2] | padded[1:-1, 2:])


def _mark_tiny(picture: Image.Image, layers: Sequence[Layer], scale: int, thickness: int) -> None:
    """A circle around targets too small to see (under 0.05 % of the image)."""
    draw = ImageDraw.Draw(picture)
    for index, layer in enumerate(layers):
        mask = np.asarray(layer.mask, dtype=bool)
        if 0 < mask.sum() < 0.0005 * mask.size:
            rows, cols = np.nonzero(mask)
            y, x = rows.mean() * scale, cols.mean() * scale
            radius = 6 * thickness
            draw.ellipse((x - radius, y - radius, x + radius, y + radius),
                         outline=PALETTE[index % len(PALETTE)], width=thickness)


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: one bitmap size
        return ImageFont.load_default()


def _with_legend(picture: Image.Image, layers: Sequence[Layer]) -> Image.Image:
    size = max(14, picture.width // 45)
    font = _font(size)
    line = int(size * 1.6)
    strip = Image.new("RGB", (picture.width, line * len(layers) + size // 2), (255, 255, 255))
    draw = ImageDraw.Draw(strip)
    for index, layer in enumerate(layers):
        top = size // 4 + index * line
        draw.rectangle((size // 2, top + 2, size // 2 + size, top + size + 2), fill=PALETTE[index % len(PALETTE)])
        text = layer.label + (f"  ({layer.granularity})" if layer.granularity else "")
        draw.text((size * 2, top), _fit(draw, text, font, picture.width - size * 3), fill=(20, 20, 20), font=font)
    out = Image.new("RGB", (picture.width, picture.height + strip.height), (255, 255, 255))
    out.paste(picture, (0, 0))
    out.paste(strip, (0, picture.height))
    return out


def _fit(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.ImageFont, width: int) -> str:
    """``text``, cut with an ellipsis to ``width`` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def layers_of(reply: Any) -> list[Layer]:
    """One layer per target of a :class:`~pixelagent.results.Reply`."""
    return [Layer(t.mask, t.phrase or "(no phrase)", t.granularity.value) for t in reply.targets]
