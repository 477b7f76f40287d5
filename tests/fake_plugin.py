"""An in-memory pixelagent plugin of fake parts, deterministic and tiny, for the core's tests.

The scene (:func:`make_scene`) holds coloured rectangles nested like object → part → text:
a red "bottle" containing a blue "label" containing a green "word", and a yellow "sign"
elsewhere. The fake LLM names the colours the question mentions as ``[OBJ]the C region[SEG]``;
the fake decoder segments a colour as the filled bounding box of its pixels, so masks come from
the image itself and nest exactly as the rectangles do.
"""

from __future__ import annotations

import re
import threading

import numpy as np
from pydantic import BaseModel, ConfigDict

from pixelagent import hookimpl
from pixelagent.markup import find_focus_spans, format_focus
from pixelagent.parts import (AlignmentStrategy, DecoderPrompt, Generation, LLMBackbone,
                              LLMRequest, MaskDecoder, MaskPrediction, VisualEncoder)

COLOURS = {
    "red": (220, 40, 40),
    "blue": (40, 60, 220),
    "green": (40, 200, 60),
    "yellow": (230, 210, 40),
    "purple": (150, 40, 160),  # never drawn: asking for it gives an empty mask
}
# (colour, y0, y1, x0, x1) drawn in order, so later rectangles sit on top.
RECTANGLES = [("red", 10, 80, 10, 70), ("blue", 30, 60, 20, 60), ("green", 40, 48, 30, 45),
              ("yellow", 20, 50, 85, 120)]


def make_scene(height: int = 96, width: int = 128) -> np.ndarray:
    """RGB uint8 (height, width, 3): grey background and the nested rectangles above."""
    image = np.full((height, width, 3), 128, dtype=np.uint8)
    for colour, y0, y1, x0, x1 in RECTANGLES:
        image[y0:y1, x0:x1] = COLOURS[colour]
    return image


def rectangle_mask(colour: str, height: int = 96, width: int = 128) -> np.ndarray:
    """The true (H, W) bool mask of a drawn rectangle, for assertions."""
    mask = np.zeros((height, width), dtype=bool)
    for name, y0, y1, x0, x1 in RECTANGLES:
        if name == colour:
            mask[y0:y1, x0:x1] = True
    return mask


class Counter:
    """A thread-safe call counter."""

    def __init__(self) -> None:
        self.count = 0
        self._lock = threading.Lock()

    def bump(self) -> None:
        with self._lock:
            self.count += 1


class FakeEncoder(VisualEncoder):
    """Encodes an image to its per-channel mean; counts calls."""

    def __init__(self) -> None:
        self.calls = Counter()

    def encode(self, image: np.ndarray) -> np.ndarray:
        self.calls.bump()
        return image.reshape(-1, 3).mean(axis=0)


class FakeLLM(LLMBackbone):
    """Names every colour word of the question, in order of appearance."""

    def respond(self, request: LLMRequest) -> Generation:
        assert request.visual is not None and request.visual.shape == (3,)
        request.state["turns_seen"] = request.state.get("turns_seen", 0) + 1
        words = re.findall(r"[a-z]+", request.question.lower())
        colours = [w for w in words if w in COLOURS]
        if not colours:
            return Generation(text=f"I see {len(RECTANGLES)} coloured regions.")
        spans = " and ".join(format_focus(f"the {c} region") for c in dict.fromkeys(colours))
        return Generation(text=f"Sure, it is {spans}.")


class FakeAlignment(AlignmentStrategy):
    """One prompt per ``[OBJ]…[SEG]`` span, its embedding the phrase itself."""

    def align(self, generation: Generation, image_size: tuple[int, int]) -> list[DecoderPrompt]:
        return [DecoderPrompt(phrase=s.phrase, embedding=s.phrase) for s in find_focus_spans(generation.text)]


class FakeDecoderSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    low_res: bool = False  # predict at half resolution, to exercise the session's resize


class FakeDecoder(MaskDecoder):
    """Segments "the C region" as the filled bounding box of colour C's pixels."""

    def __init__(self, settings: FakeDecoderSettings) -> None:
        self.settings = settings
        self.calls = Counter()

    def embed_image(self, image: np.ndarray) -> np.ndarray:
        self.calls.bump()
        return image

    def decode(self, image_embedding, prompts, image_size):
        return [self._one(image_embedding, p.embedding) for p in prompts]

    def _one(self, image: np.ndarray, phrase: str) -> MaskPrediction:
        colour = phrase.split()[1]
        hit = np.all(image == np.array(COLOURS[colour], dtype=np.uint8), axis=-1)
        mask = np.zeros(hit.shape, dtype=bool)
        if hit.any():
            ys, xs = np.nonzero(hit)
            mask[ys.min():ys.max() + 1, xs.min():xs.max() + 1] = True
        if self.settings.low_res:
            mask = mask[::2, ::2]
        return MaskPrediction(mask=mask, score=0.9)


@hookimpl
def register_visual_encoders(register):
    register("fake-encoder", lambda settings, context: FakeEncoder(), aliases=("fake-enc",),
             description="channel means, counting calls")


@hookimpl
def register_llm_backbones(register):
    register("fake-llm", lambda settings, context: FakeLLM(), description="names colour words")


@hookimpl
def register_alignment_strategies(register):
    register("fake-alignment", lambda settings, context: FakeAlignment(), description="phrase prompts")


@hookimpl
def register_mask_decoders(register):
    register("fake-decoder", lambda settings, context: FakeDecoder(settings),
             settings=FakeDecoderSettings, description="colour bounding boxes")


@hookimpl
def register_presets(register):
    register({"name": "fake", "description": "fake parts for tests", "device": "cpu",
              "visual_encoder": "fake-encoder", "llm": "fake-llm",
              "alignment": "fake-alignment", "mask_decoder": "fake-decoder"},
             aliases=("fake-tiny",))
