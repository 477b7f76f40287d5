"""Parsing ``<box>(x1, y1), (x2, y2)</box>`` answers (paper Appendix C.3) and filling boxes.

Chat models write boxes loosely: extra text around them, several boxes, corners in either
order, coordinates past the image edge, or — Qwen2-VL and others — normalised to 0-1000.
"""

from __future__ import annotations

import re
from typing import Literal

import numpy as np

from pixelagent.parts import AlignmentStrategy, DecoderPrompt, Generation, MaskDecoder, MaskPrediction

Coordinates = Literal["pixels", "norm1000", "auto"]
NO_TARGET = re.compile(r"\bno[t]?\s+detected\b", re.IGNORECASE)
_NUMBER = r"(-?\d+(?:\.\d+)?)"
_BOX = re.compile(
    rf"<box>\s*\(?\s*{_NUMBER}\s*,\s*{_NUMBER}\s*\)?\s*,?\s*\(?\s*{_NUMBER}\s*,\s*{_NUMBER}\s*\)?\s*</box>",
    re.IGNORECASE)


def parse_boxes(text: str, image_size: tuple[int, int], coordinates: Coordinates = "pixels") -> list[tuple[float, float, float, float]]:
    """Every box of ``text`` as (x0, y0, x1, y1) pixels of an (H, W) image: corners ordered,
    clipped to the image, empty boxes dropped. "no detected" or no box → []."""
    height, width = image_size
    found = [tuple(float(v) for v in m.groups()) for m in _BOX.finditer(text)]
    if not found:
        return []
    scale = _scale(found, image_size, coordinates)
    boxes = []
    for x0, y0, x1, y1 in found:
        x0, x1 = sorted((x0 * scale[0], x1 * scale[0]))
        y0, y1 = sorted((y0 * scale[1], y1 * scale[1]))
        box = (min(max(x0, 0), width), min(max(y0, 0), height), min(max(x1, 0), width), min(max(y1, 0), height))
        if box[2] > box[0] and box[3] > box[1]:
            boxes.append(box)
    return boxes


def _scale(boxes, image_size, coordinates: Coordinates) -> tuple[float, float]:
    height, width = image_size
    if coordinates == "norm1000" or (coordinates == "auto" and _looks_normalised(boxes, image_size)):
        return width / 1000.0, height / 1000.0
    return 1.0, 1.0


def _looks_normalised(boxes, image_size) -> bool:
    """All values within 0-1000 yet some past the image edge: the model used the 0-1000 grid."""
    height, width = image_size
    xs = [v for box in boxes for v in (box[0], box[2])]
    ys = [v for box in boxes for v in (box[1], box[3])]
    return max(xs + ys) <= 1000 and (max(xs) > width or max(ys) > height)


class BoxTagAlignment(AlignmentStrategy):
    """Reply text → one box prompt per ``<box>`` (no hidden states needed)."""

    def __init__(self, coordinates: Coordinates = "pixels") -> None:
        self.coordinates = coordinates

    def align(self, generation: Generation, image_size: tuple[int, int]) -> list[DecoderPrompt]:
        if NO_TARGET.search(generation.text) and not _BOX.search(generation.text):
            return []
        # the reply's words around the box name the target ("The red label: <box>...</box>")
        phrase = _BOX.sub("", generation.text).strip(" .:,\n") or "the focus"
        return [DecoderPrompt(phrase=phrase, box=box)
                for box in parse_boxes(generation.text, image_size, self.coordinates)]


class FilledBoxDecoder(MaskDecoder):
    """The paper's baseline for general MLLMs: a box becomes the filled box."""

    def embed_image(self, image: np.ndarray) -> None:
        return None

    def decode(self, image_embedding, prompts: list[DecoderPrompt], image_size: tuple[int, int]) -> list[MaskPrediction]:
        return [MaskPrediction(mask=fill_box(p.box, image_size), score=1.0) for p in prompts]


def fill_box(box: tuple[float, float, float, float] | None, image_size: tuple[int, int]) -> np.ndarray:
    """(H, W) bool with the pixels whose centres lie inside ``box`` set."""
    mask = np.zeros(image_size, dtype=bool)
    if box is not None:
        x0, y0, x1, y1 = box
        mask[int(np.ceil(y0 - 0.5)):int(np.ceil(y1 - 0.5)), int(np.ceil(x0 - 0.5)):int(np.ceil(x1 - 0.5))] = True
    return mask
