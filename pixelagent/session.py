"""A conversation about one image: the engine that runs the parts turn by turn."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from pathlib import Path
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


def _shared(agent: Agent, kind: str, method: str, item: Any) -> Any:
    """``parts[kind].method([item])[0]``, batched with other sessions' concurrent turns when the
    agent shares work between them (:meth:`pixelagent.Agent.shared`)."""
    shared = getattr(agent, "shared", None)
    if shared is None:
        return getattr(agent.parts[kind], method)([item])[0]
    return shared(kind, method).submit(item)


def _in_flight(agent: Agent) -> Any:
    """The agent's turn counter (parts batch concurrent turns); a no-op for agents without one."""
    counter = getattr(agent, "in_flight", None)
    return counter if counter is not None else contextlib.nullcontext()


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
        #: The file the image was read from, when known: :meth:`save` then references it (path
        #: and SHA-256) instead of writing the pixels out. Set it after ``agent.session(path)``.
        self.image_path: Path | None = None

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
            drop = getattr(self.agent.parts["llm"], "drop_cache", None)  # parts not built on LLMBackbone lack it
            if drop is not None:
                drop(self._llm_state)
            else:
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
        with self._lock, _in_flight(self.agent):
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
        predictions = _shared(self.agent, "mask_decoder", "decode_many",
                              (self.image_embedding(), prompts, self.image_size))
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
                self._visual = _shared(self.agent, "visual_encoder", "encode_many", self.image)
            return self._visual

    def image_embedding(self) -> Any:
        """The mask decoder's image embedding, computed on first use only."""
        with self._lock:
            if self._image_embedding is _UNSET:
                self._image_embedding = _shared(self.agent, "mask_decoder", "embed_many", self.image)
            return self._image_embedding

    # -- saved sessions ------------------------------------------------------------------------
    def save(self, path: str | os.PathLike, *, image_path: str | os.PathLike | None = None) -> Path:
        """Write this session to the folder ``path`` (created if needed); return ``path``.

        ``path/session.json`` holds the history (every turn with its masks as COCO RLE), the
        intent and a reference to the image: its path and SHA-256 when the image came from a file
        (``image_path``, else :attr:`image_path`) whose pixels are still the session's, otherwise
        the pixels themselves beside it as ``path/image.png``. Encodings are not saved;
        :meth:`load` recomputes them. The format is :class:`pixelagent.schema.SavedSession`.
        """
        with self._lock:
            return _save(self, Path(path), image_path if image_path is not None else self.image_path)

    @classmethod
    def load(cls, path: str | os.PathLike, agent: Agent) -> Session:
        """The session saved in the folder (or ``session.json``) ``path``, opened on ``agent``.

        Everything read is checked, as any input: the file's size and JSON, every field's type,
        the image's SHA-256 (a changed or missing image is refused), each question against the
        agent's limits, each mask's RLE and size. The intent is recomputed from the masks; image
        encodings are computed again on the next turn. Raises
        :class:`~pixelagent.errors.InputError` (or :class:`~pixelagent.errors.ImageError`) with
        one line naming the file and the problem.
        """
        return _load(Path(path), agent)

    def _restore(self, turns: list[Turn]) -> None:
        """Replace the dialogue with ``turns`` (already validated) and replay the intent."""
        with self._lock:
            self._history = list(turns)
            self._intent = IntentState()
            self._llm_state.clear()
            for turn in self._history:
                self._intent.update(turn.index, turn.reply)


# -- the saved-session folder: session.json (+ image.png) ---------------------------------------
SESSION_FILE = "session.json"
IMAGE_FILE = "image.png"
#: Largest session.json read back: 256 MiB (200 turns of 1024x1024 masks as RLE are a few MB).
MAX_SAVED_BYTES = 256 << 20
#: Longest reply text accepted from a saved file (a reply is a few hundred characters).
MAX_SAVED_TEXT_CHARS = 100_000


def _save(session: Session, folder: Path, image_path: str | os.PathLike | None) -> Path:
    from pixelagent.schema import session_record

    return save_record(folder, session_record(session), session.image, image_path, session.agent.preset.name)


def save_record(folder: str | os.PathLike, record: Any, pixels: np.ndarray,
                image_path: str | os.PathLike | None, preset: str) -> Path:
    """Write a :class:`~pixelagent.schema.SessionRecord` about ``pixels`` as a saved-session folder.

    What :meth:`Session.save` does, for a record that came from elsewhere (a server's
    ``GET /v1/sessions/{id}``, say): ``image_path`` is referenced when it still holds ``pixels``,
    else the pixels are written beside it.
    """
    from datetime import datetime, timezone

    from pixelagent.files import make_output_folder, writing
    from pixelagent.schema import SavedSession

    folder = make_output_folder(folder, "session folder")
    reference = _file_reference(pixels, Path(image_path), folder) if image_path is not None else None
    with writing(folder / IMAGE_FILE, "session image"):
        if reference is None:
            reference = _embed_image(pixels, folder)
        elif (folder / IMAGE_FILE).is_file():
            (folder / IMAGE_FILE).unlink()  # a stale copy from an earlier save would mislead
    document = SavedSession(**dict(record), preset=preset, saved=datetime.now(timezone.utc), image=reference)
    with writing(folder / SESSION_FILE, "saved session"):
        _write_atomically(folder / SESSION_FILE, document.model_dump_json(indent=2).encode("utf-8"))
    return folder


def _file_reference(pixels: np.ndarray, image_path: Path, folder: Path) -> Any:
    """A reference to ``image_path`` if it still decodes to ``pixels``, else None (embed them)."""
    import hashlib

    from pixelagent.errors import ImageError
    from pixelagent.files import read_bytes
    from pixelagent.images import load_image
    from pixelagent.schema import ImageReference

    try:
        data = read_bytes(image_path, "image", max_bytes=None, error=ImageError)
        same = np.array_equal(load_image(data, max_pixels=None), pixels)
    except ImageError as exc:
        logger.info("pixelagent: saving the pixels instead of a reference: %s", exc)
        return None
    if not same:
        logger.info("pixelagent: %s no longer holds the session's image; saving the pixels", image_path)
        return None
    absolute = image_path.resolve()
    return ImageReference(embedded=False, path=str(absolute), relative=os.path.relpath(absolute, folder.resolve()),
                          sha256=hashlib.sha256(data).hexdigest(), size=pixels.shape[:2])


def _embed_image(pixels: np.ndarray, folder: Path) -> Any:
    import hashlib
    import io

    from PIL import Image

    from pixelagent.schema import ImageReference

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    data = buffer.getvalue()
    _write_atomically(folder / IMAGE_FILE, data)
    return ImageReference(embedded=True, relative=IMAGE_FILE, sha256=hashlib.sha256(data).hexdigest(),
                          size=pixels.shape[:2])


def _write_atomically(path: Path, data: bytes) -> None:
    """Write to a temporary name, then rename: a killed save never leaves half a file."""
    partial = path.with_name(f".{path.name}.partial")
    try:
        partial.write_bytes(data)
        os.replace(partial, path)
    except BaseException:  # a full disk: leave no half-written .partial behind
        partial.unlink(missing_ok=True)
        raise


def _load(path: Path, agent: Agent) -> Session:
    import json

    from pydantic import ValidationError

    from pixelagent.errors import InputError
    from pixelagent.files import read_bytes
    from pixelagent.schema import SAVED_FORMAT, SAVED_FORMAT_VERSION, SavedSession, validation_message

    file = path / SESSION_FILE if path.is_dir() else path
    raw = read_bytes(file, "saved session", max_bytes=MAX_SAVED_BYTES, error=InputError)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:  # an image or other binary file named instead of the folder
        raise InputError(f"{file} is not a saved pixelagent session (it is not text); pass the folder "
                         "Session.save or chat's /save wrote") from None
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:  # not JSON, nested past the parser, a 5000-digit number
        why = (str(exc) if isinstance(exc, json.JSONDecodeError) else "nested too deeply"
               if isinstance(exc, RecursionError) else "a number in it has more than 4300 digits")
        raise InputError(f"saved session {file} is not valid JSON ({why}); was it written by Session.save?") from None
    if not isinstance(data, dict) or data.get("format") != SAVED_FORMAT:
        raise InputError(f"{file} is not a saved pixelagent session (it has no \"format\": \"{SAVED_FORMAT}\"); "
                         "pass a folder written by Session.save or chat's /save")
    version = data.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= SAVED_FORMAT_VERSION:
        raise InputError(f"saved session {file} has format_version {version!r}; this pixelagent reads "
                         f"1 to {SAVED_FORMAT_VERSION} (upgrade pixelagent for newer files)")
    unknown = sorted(set(data) - set(SavedSession.model_fields))
    if unknown:
        logger.warning("pixelagent: %s: ignoring unknown keys %s", file, ", ".join(map(repr, unknown[:10])))
    try:
        saved = SavedSession.model_validate(data)
    except ValidationError as exc:
        raise InputError(validation_message(exc, f"saved session {file} is invalid")) from None
    if saved.preset != agent.preset.name:
        logger.info("pixelagent: %s was saved with %s; continuing it on %s", file, saved.preset, agent.preset.name)
    pixels, image_path = _saved_image(saved, file)
    session = Session(agent, pixels)
    session._restore(_saved_turns(saved, session.image_size, agent.preset.limits, file))
    session.image_path = image_path
    return session


def _saved_image(saved: Any, file: Path) -> tuple[np.ndarray, Path | None]:
    """The saved session's pixels, checked against the recorded SHA-256 and size."""
    import hashlib

    from pixelagent.errors import ImageError, InputError
    from pixelagent.files import read_bytes
    from pixelagent.images import load_image

    reference = saved.image
    folder = file.parent
    if reference.embedded:
        candidates = [folder / IMAGE_FILE]  # a fixed name: the file cannot point elsewhere
    else:
        candidates = [Path(p) for p in (reference.path, reference.relative and folder / reference.relative) if p]
    found = next((c for c in candidates if c.exists()), None)
    if found is None:
        names = " or ".join(str(c) for c in candidates) or "no path"
        raise InputError(f"saved session {file}: its image is missing (looked for {names}); "
                         "put the image back or save the session again")
    data = read_bytes(found, "image", max_bytes=None, error=ImageError)
    if hashlib.sha256(data).hexdigest() != reference.sha256:
        raise InputError(f"saved session {file}: the image {found} has changed since the session was saved "
                         "(its SHA-256 differs); the masks would not match it: restore the original image")
    pixels = load_image(data)
    size = tuple(pixels.shape[:2])
    if size != tuple(reference.size) or size != tuple(saved.image_size):
        raise InputError(f"saved session {file}: the image is {size[0]}x{size[1]} but the file records "
                         f"{saved.image_size[0]}x{saved.image_size[1]}; the file has been edited")
    return pixels, None if reference.embedded else found


def _saved_turns(saved: Any, image_size: tuple[int, int], limits: Any, file: Path) -> list[Turn]:
    """The saved turns as :class:`Turn` objects, each field checked like fresh input."""
    from pixelagent.errors import InputError, MaskError
    from pixelagent.limits import check_text_encodable

    if len(saved.history) > limits.max_turns:
        raise InputError(f"saved session {file} holds {len(saved.history)} turns, over this model's "
                         f"limits.max_turns of {limits.max_turns}")
    turns = []
    for position, record in enumerate(saved.history, start=1):
        where = f"saved session {file}: turn {position}"
        if record.turn != position:
            raise InputError(f"{where} is numbered {record.turn}; turns must be numbered 1, 2, ... in order")
        try:
            check_question(record.question, limits)
            texts = [record.text, record.raw_text, record.reason or "", *record.notes,
                     *(t.phrase for t in record.targets)]
            for text in texts:
                if len(text) > MAX_SAVED_TEXT_CHARS:
                    raise InputError(f"a text field is {len(text):,} characters, over {MAX_SAVED_TEXT_CHARS:,}")
                check_text_encodable(text, "a text field")
            turn = record.to_turn()
        except (InputError, MaskError) as exc:
            raise InputError(f"{where}: {exc}") from None
        for target in turn.reply.targets:
            if target.mask.shape != image_size or target.mask.is_empty:
                raise InputError(f"{where}: the mask of {target.phrase!r} is {target.mask.shape[0]}x"
                                 f"{target.mask.shape[1]} or empty; masks must be non-empty at the image's "
                                 f"{image_size[0]}x{image_size[1]}")
        turns.append(turn)
    return turns
