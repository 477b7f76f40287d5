"""Pictures of a turn: the image with each target's mask in its own colour, and the mask PNG."""

from __future__ import annotations

import io

import numpy as np

from pixelagent.mask import Mask
from pixelagent.results import Turn

#: Colour of target i (cycled): the page's legend shows the same list (it is put into the page).
PALETTE: tuple[tuple[int, int, int], ...] = (
    (255, 64, 64), (64, 160, 255), (255, 200, 0), (80, 220, 120), (220, 80, 255), (255, 140, 0),
    (0, 210, 210), (240, 90, 170),
)


def hex_colour(rgb: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def overlay_png(image: np.ndarray, turn: Turn) -> bytes:
    """PNG of ``image`` (H, W, 3) with target i of ``turn`` drawn in ``PALETTE[i]``."""
    from PIL import Image

    picture = image
    for index, target in enumerate(turn.reply.targets):
        picture = np.asarray(target.mask.overlay(picture, PALETTE[index % len(PALETTE)]))
    return _png(Image.fromarray(np.ascontiguousarray(picture)))


def mask_png(turn: Turn) -> bytes | None:
    """The 1-bit PNG of the union of ``turn``'s targets; None when it has none."""
    mask: Mask | None = turn.reply.mask
    return None if mask is None else mask.to_png()


def _png(picture: object) -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")  # type: ignore[attr-defined]
    return buffer.getvalue()
