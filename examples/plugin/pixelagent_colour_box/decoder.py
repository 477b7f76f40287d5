"""The ``colour-box`` decoder: keep the pixels of a box that share the colour of its centre."""

from __future__ import annotations

import numpy as np

from pixelagent.parts import DecoderPrompt, MaskDecoder, MaskPrediction


class ColourBoxDecoder(MaskDecoder):
    """Box prompts → masks of the box's dominant colour.

    Args:
        tolerance: largest Euclidean RGB distance (0-255) from the dominant colour.
        core: the dominant colour is the median of the central ``core`` × ``core`` part of the box.
    """

    def __init__(self, tolerance: float = 60.0, core: float = 0.5) -> None:
        self.tolerance = tolerance
        self.core = core

    def embed_image(self, image: np.ndarray) -> np.ndarray:
        """The image itself (H, W, 3) as float32: all this decoder needs, kept once per session."""
        return image.astype(np.float32)

    def decode(self, image_embedding: np.ndarray, prompts: list[DecoderPrompt],
               image_size: tuple[int, int]) -> list[MaskPrediction]:
        return [self._one(image_embedding, prompt.box) for prompt in prompts]

    def _one(self, image: np.ndarray, box) -> MaskPrediction:
        height, width = image.shape[:2]
        mask = np.zeros((height, width), dtype=bool)
        if box is None:
            return MaskPrediction(mask=mask, score=0.0)
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        x0, x1 = max(0, min(x0, x1)), min(width, max(x0, x1))
        y0, y1 = max(0, min(y0, y1)), min(height, max(y0, y1))
        if x1 <= x0 or y1 <= y0:
            return MaskPrediction(mask=mask, score=0.0)
        crop = image[y0:y1, x0:x1]
        colour = np.median(_centre(crop, self.core).reshape(-1, 3), axis=0)
        near = np.linalg.norm(crop - colour, axis=-1) <= self.tolerance
        mask[y0:y1, x0:x1] = near
        return MaskPrediction(mask=mask, score=float(near.mean()))


def _centre(crop: np.ndarray, fraction: float) -> np.ndarray:
    """The central ``fraction`` of ``crop`` on each side (at least one pixel)."""
    h, w = crop.shape[:2]
    dh, dw = max(1, round(h * fraction)), max(1, round(w * fraction))
    top, left = (h - dh) // 2, (w - dw) // 2
    return crop[top:top + dh, left:left + dw]
