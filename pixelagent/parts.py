"""The four kinds of part a pixelagent model is composed of, and what flows between them.

One conversation turn runs the parts in this order (the session caches the per-image work)::

    image ──VisualEncoder.encode──► visual features           (once per image)
    image ──MaskDecoder.embed_image──► image embedding        (once per image)
    question + history + visual ──LLMBackbone.respond──► Generation (reply text, hidden states)
    Generation ──AlignmentStrategy.align──► [DecoderPrompt, ...]  (zero, one or several)
    image embedding + prompts ──MaskDecoder.decode──► [MaskPrediction, ...]

Parts never import each other; the data classes below are the whole contract. Tensors inside
them are whatever the parts agree on (torch tensors for the neural plugins); the core never
looks inside.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

if TYPE_CHECKING:
    from pixelagent.intent import IntentState
    from pixelagent.results import Turn

#: Kinds of part, in the order a preset builds them (later builders may look at earlier parts).
PART_KINDS: tuple[str, ...] = ("visual_encoder", "mask_decoder", "llm", "alignment")


@dataclass
class DecoderPrompt:
    """What the alignment strategy hands the mask decoder for one target.

    Attributes:
        phrase: the focus phrase this prompt stands for (``""`` if the model gave none).
        embedding: a prompt embedding, e.g. a torch tensor of shape (256,) for LISA / MIRAS.
        box: a box prompt ``(x0, y0, x1, y1)`` in pixels of the original (oriented) image.
    """

    phrase: str
    embedding: Any = None
    box: tuple[float, float, float, float] | None = None


@dataclass
class MaskPrediction:
    """The decoder's answer to one prompt.

    ``mask`` is a bool array (h, w); it may be at a lower resolution than the image, in which
    case the session resizes it (nearest neighbour) to the image's (H, W). ``score`` is the
    decoder's confidence in [0, 1] (SAM's predicted IoU, for instance).
    """

    mask: np.ndarray
    score: float = 1.0


@dataclass
class Generation:
    """The LLM backbone's reply to one turn.

    Attributes:
        text: the raw reply, special tokens included (``"It is [OBJ]the label[SEG]."``).
        hidden_states: per-token last-layer hidden states of the generated tokens, e.g. a
            tensor (T, d), for alignment strategies that read them; ``None`` for remote models.
        token_ids: the generated token ids (T,), aligned with ``hidden_states``.
        extras: anything else a matching alignment strategy needs.
        notes: what the user should know about how this reply was made, one line each (e.g.
            "the 3 oldest exchanges were left out of the model's context"); they reach
            ``Reply.notes``.
    """

    text: str
    hidden_states: Any = None
    token_ids: Any = None
    extras: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass
class LLMRequest:
    """Everything the LLM backbone sees for one turn.

    Attributes:
        question: the user's new message.
        history: the earlier turns of this session, oldest first.
        image: the session image, RGB uint8 (H, W, 3).
        visual: the visual encoder's output for this image (computed once per session).
        intent: what the user has been after so far; backbones may put it in their prompt.
        state: this backbone's private per-session scratch space (a dialogue KV cache, say);
            it survives between turns and is cleared by ``Session.reset()``.
        context_policy: what to do when the history and the question no longer fit the
            backbone's context window (:mod:`pixelagent.limits`): ``"drop-oldest"`` leaves the
            oldest exchanges out of the prompt and says so in ``Generation.notes``; ``"refuse"``
            raises :class:`~pixelagent.errors.InputError`. User text in ``question`` and in the
            history's questions is plain text: backbones must never let it become control
            tokens (``[SEG]``, ``[OBJ]``, ``</s>``, an image placeholder).
    """

    question: str
    history: Sequence[Turn]
    image: np.ndarray
    visual: Any
    intent: IntentState
    state: dict[str, Any]
    context_policy: str = "drop-oldest"


class Part(ABC):
    """Base of every part. ``kind`` names which of :data:`PART_KINDS` a class implements."""

    kind: ClassVar[str]


class VisualEncoder(Part):
    """Image → visual features for the LLM (e.g. CLIP tokens (576, d))."""

    kind = "visual_encoder"

    @abstractmethod
    def encode(self, image: np.ndarray) -> Any:
        """Encode an RGB uint8 image (H, W, 3). Called once per session."""

    def encode_many(self, images: Sequence[np.ndarray]) -> list[Any]:
        """``[encode(image) for image in images]``, for the images of sessions opening at the same
        time (:mod:`pixelagent.batching`); override to run them as one batch."""
        return [self.encode(image) for image in images]


class LLMBackbone(Part):
    """Visual features + dialogue → reply text (+ hidden states)."""

    kind = "llm"

    @abstractmethod
    def respond(self, request: LLMRequest) -> Generation:
        """Answer ``request.question`` given the history and the image."""

    def drop_cache(self, state: dict[str, Any]) -> None:
        """Free what a session's ``state`` holds that the next turn can recompute (called by
        ``Session.forget_caches``, and by the server for sessions it evicts). The default clears
        it all; keep what cannot be recomputed from the history's text, such as the exact ids
        generated, so that the dialogue goes on as it would have."""
        state.clear()


class AlignmentStrategy(Part):
    """Reply (+ hidden states) → one decoder prompt per target the reply names."""

    kind = "alignment"

    @abstractmethod
    def align(self, generation: Generation, image_size: tuple[int, int]) -> list[DecoderPrompt]:
        """Prompts for the decoder; an empty list means the reply names no target.

        ``image_size`` is the original (H, W), for strategies that produce boxes.
        """


class MaskDecoder(Part):
    """Image + prompts → masks."""

    kind = "mask_decoder"

    @abstractmethod
    def embed_image(self, image: np.ndarray) -> Any:
        """Per-image features (SAM: a (256, 64, 64) embedding). Called once per session, lazily."""

    def embed_many(self, images: Sequence[np.ndarray]) -> list[Any]:
        """``[embed_image(image) for image in images]``, for the images of sessions opening at
        the same time (:mod:`pixelagent.batching`): one thread computes them in turn instead of
        one thread per session competing for the same cores; override to batch them."""
        return [self.embed_image(image) for image in images]

    @abstractmethod
    def decode(
        self, image_embedding: Any, prompts: list[DecoderPrompt], image_size: tuple[int, int]
    ) -> list[MaskPrediction]:
        """One prediction per prompt, in order; masks at ``image_size`` (H, W) or lower."""

    def decode_many(self, requests: Sequence[tuple[Any, list[DecoderPrompt], tuple[int, int]]]
                    ) -> list[list[MaskPrediction]]:
        """:meth:`decode` for the turns of several sessions at once, each request
        ``(image_embedding, prompts, image_size)`` (:mod:`pixelagent.batching`); override to run
        them as one batch."""
        return [self.decode(*request) for request in requests]


PART_BASES: dict[str, type[Part]] = {
    cls.kind: cls for cls in (VisualEncoder, MaskDecoder, LLMBackbone, AlignmentStrategy)
}
