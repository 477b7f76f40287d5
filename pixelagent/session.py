"""A conversation about one image: the engine that runs the parts turn by turn."""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

import numpy as np

from pixelagent.errors import PartError
from pixelagent.intent import IntentState
from pixelagent.limits import check_question, check_turn_budget
from pixelagent.mask import Mask
from pixelagent.markup import render_plain
from pixelagent.parts import DecoderPrompt, Generation, LLMRequest, MaskPrediction
from pixelagent.results import Reply, Target, Turn

if TYPE_CHECKING:
    from pixelagent.agent import Agent

_UNSET: Any = object()
logger = logging.getLogger("pixelagent")


class Session:
    """One image, its cached encodings, the dialogue so far and the intent state.

    Made by :meth:`pixelagent.Agent.session`. The visual features and the decoder's image
    embedding are computed at most once per session (lazily, on the first turn that needs
    them) and survive :meth:`reset`; per-turn work is only the LLM, alignment and decoding.
    A session may be used from several threads (turns are serialised); separate sessions of
    one agent share nothing but the parts.

    What it accepts is bounded by the preset's ``limits`` (:mod:`pixelagent.limits`): question
    length, number of turns, and what happens when the dialogue outgrows the model's context
    window. User text is always plain text to the model, never markup.
    """

    def __init__(self, agent: Agent, image: np.ndarray) -> None:
        self.agent = agent
        image = np.ascontiguousarray(image)
        image.flags.writeable = False  # parts share it; nobody may paint on it
        self.image = image
        self._lock = threading.RLock()
        self._visual: Any = _UNSET
        self._image_embedding: Any = _UNSET
        self._llm_state: dict[str, Any] = {}
        self._history: list[Turn] = []
        self._intent = IntentState()

    # -- what users read ---------------------------------------------------------------------
    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) of the session image, after EXIF orientation."""
        return self.image.shape[0], self.image.shape[1]

    @property
    def history(self) -> list[Turn]:
        """The turns so far, oldest first (a copy)."""
        with self._lock:
            return list(self._history)

    @property
    def intent(self) -> IntentState:
        """The focus history (a copy): phrases, masks, granularity and relations."""
        with self._lock:
            return self._intent.model_copy(update={"focuses": list(self._intent.focuses)})

    def reset(self) -> None:
        """Forget the dialogue and the intent; keep the image encodings (same image)."""
        with self._lock:
            self._history.clear()
            self._intent = IntentState()
            self._llm_state.clear()

    def forget_caches(self) -> None:
        """Drop the image encodings and the backbone's dialogue cache; keep history and intent.

        The next turn recomputes everything, as stateless pipelines (LISA, GLaMM) do on every
        turn. Useful to free memory held by an idle session, and to measure what caching buys.
        """
        with self._lock:
            self._visual = self._image_embedding = _UNSET
            self._llm_state.clear()

    # -- one turn ----------------------------------------------------------------------------
    def ask(self, question: str) -> Reply:
        """Answer ``question`` in the context of the earlier turns; segment what the reply names.

        Raises :class:`~pixelagent.errors.InputError` (one line, nothing recorded) for a question
        that is not text, is empty, is over ``limits.max_question_chars`` or holds lone
        surrogates, and once the session holds ``limits.max_turns`` turns.
        """
        limits = self.agent.preset.limits
        check_question(question, limits)
        with self._lock:
            check_turn_budget(len(self._history), limits)
            generation = self._respond(question)
            reply = self._reply_for(generation)
            turn = Turn(index=len(self._history) + 1, question=question, reply=reply)
            self._history.append(turn)
            self._intent.update(turn.index, reply)
            return reply

    def _respond(self, question: str) -> Generation:
        request = LLMRequest(question=question, history=tuple(self._history), image=self.image,
                             visual=self.visual_features(), intent=self._intent,
                             state=self._llm_state, context_policy=self.agent.preset.limits.context_policy)
        generation = self.agent.parts["llm"].respond(request)
        if not isinstance(generation, Generation):
            raise PartError(f"LLM backbone returned {type(generation).__name__}, not a Generation")
        for note in generation.notes:
            logger.info("pixelagent: turn %d: %s", len(self._history) + 1, note)
        return generation

    def _reply_for(self, generation: Generation) -> Reply:
        text = render_plain(generation.text)
        notes = list(generation.notes)
        prompts = self.agent.parts["alignment"].align(generation, self.image_size)
        if not prompts:
            return Reply(text=text, raw_text=generation.text, notes=notes)
        predictions = self._decode(prompts)
        targets = [self._target(p, pred) for p, pred in zip(prompts, predictions)]
        kept = [t for t in targets if t is not None]
        reason = None
        if not kept:
            named = ", ".join(repr(p.phrase) for p in prompts)
            reason = f"the mask decoder found no pixels for {named}"
        return Reply(text=text, raw_text=generation.text, targets=kept, reason=reason, notes=notes)

    def _decode(self, prompts: list[DecoderPrompt]) -> list[MaskPrediction]:
        predictions = self.agent.parts["mask_decoder"].decode(
            self.image_embedding(), prompts, self.image_size)
        if len(predictions) != len(prompts):
            raise PartError(f"mask decoder returned {len(predictions)} masks for {len(prompts)} prompts")
        return predictions

    def _target(self, prompt: DecoderPrompt, prediction: MaskPrediction) -> Target | None:
        mask = Mask(np.asarray(prediction.mask, dtype=bool))
        if mask.shape != self.image_size:
            mask = mask.resize(self.image_size)  # decoders may predict at a lower resolution
        if mask.is_empty:
            return None  # an empty mask is no answer; the reply says so instead
        score = float(np.clip(prediction.score, 0.0, 1.0))
        return Target(phrase=prompt.phrase, mask=mask, score=score)

    # -- per-image caches --------------------------------------------------------------------
    def visual_features(self) -> Any:
        """The visual encoder's output for this image, computed on first use only."""
        with self._lock:
            if self._visual is _UNSET:
                self._visual = self.agent.parts["visual_encoder"].encode(self.image)
            return self._visual

    def image_embedding(self) -> Any:
        """The mask decoder's image embedding, computed on first use only."""
        with self._lock:
            if self._image_embedding is _UNSET:
                self._image_embedding = self.agent.parts["mask_decoder"].embed_image(self.image)
            return self._image_embedding
