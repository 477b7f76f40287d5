"""Words rendered to coverage patches with Pillow's bundled font.

Pillow >= 10.1 ships a scalable default font (``ImageFont.load_default(size=...)``); older
Pillow only has a fixed ~11 px bitmap font, which we render once and rescale.
"""

from __future__ import annotations

import functools

import numpy as np
from PIL import Image, ImageDraw, ImageFont

_BITMAP_HEIGHT = 11  # px: the cap height class of Pillow's legacy bitmap font


@functools.lru_cache(maxsize=None)
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont | None:
    """The scalable default font at ``size`` px, or None where this Pillow has none."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, AttributeError, OSError):  # Pillow < 10.1, or built without FreeType
        return None


def _draw(word: str, font: ImageFont.ImageFont | ImageFont.FreeTypeFont) -> np.ndarray:
    """Coverage (uint8 ``(h, w)``, 0..255) of ``word`` with a small blank margin."""
    x0, y0, x1, y1 = font.getbbox(word)
    canvas = Image.new("L", (int(x1 - x0) + 4, int(y1 - y0) + 4), 0)
    ImageDraw.Draw(canvas).text((2 - x0, 2 - y0), word, fill=255, font=font)
    return np.asarray(canvas)


@functools.lru_cache(maxsize=4096)
def render_word(word: str, size: int) -> np.ndarray:
    """``word`` at font size ``size`` px as a read-only uint8 coverage patch ``(h, w)``.

    The patch is cropped to the ink: its first/last rows and columns all hold some coverage.
    """
    font = _font(size)
    if font is not None:
        patch = _draw(word, font)
    else:
        small = _draw(word, ImageFont.load_default())
        scale = size / _BITMAP_HEIGHT
        h, w = small.shape
        patch = np.asarray(Image.fromarray(small).resize(
            (max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BILINEAR))
    patch = _crop_to_ink(patch)
    patch.flags.writeable = False
    return patch


def _crop_to_ink(patch: np.ndarray) -> np.ndarray:
    rows = np.flatnonzero(patch.any(axis=1))
    cols = np.flatnonzero(patch.any(axis=0))
    if rows.size == 0:  # a blank word (never in our word lists); keep one empty pixel
        return np.zeros((1, 1), dtype=np.uint8)
    return np.ascontiguousarray(patch[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1])


def fit_word(word: str, width: float, height: float, max_size: int | None = None,
             pad_ratio: float = 0.15) -> tuple[np.ndarray, int] | None:
    """The largest rendering of ``word`` (font size <= ``max_size`` px) whose padded ink box
    fits ``width`` x ``height`` px.

    Returns ``(patch, pad)``: the coverage patch and the padding (px, >= 1) that an annotator's
    box keeps around the ink on every side; None when even a 4-px font does not fit.
    """
    size = max(4, int(height) if max_size is None else min(int(height), max_size))
    while size >= 4:
        patch = render_word(word, size)
        pad = max(1, round(pad_ratio * patch.shape[0]))
        if patch.shape[1] + 2 * pad <= width and patch.shape[0] + 2 * pad <= height:
            return patch, pad
        # Shrink in proportion to the overflow so that long words converge in a few steps.
        ratio = min(width / (patch.shape[1] + 2 * pad), height / (patch.shape[0] + 2 * pad))
        size = min(size - 1, int(size * ratio))
    return None
