"""The one JSON form of a turn and of a session, shared by every way out of pixelagent.

``pixelagent segment --json``, ``chat --json``, ``batch`` (``results.jsonl``), the HTTP server,
saved sessions (:meth:`pixelagent.Session.save`) and the conversation log all write these
models, so a client reading one reads them all. Every document carries ``schema_version``
(:data:`SCHEMA_VERSION`); a reader that meets a larger number than it knows should say so.

A turn (:class:`TurnRecord`)::

    {"schema_version": 1, "turn": 2, "question": "its label", "text": "...", "raw_text": "...",
     "targets": [{"phrase": "the red label", "mask": {"size": [H, W], "counts": "<COCO RLE>"},
                  "bbox": [x0, y0, x1, y1], "score": 0.93, "granularity": "medium", "area": 929}],
     "no_target": false, "reason": null, "notes": [],
     "intent": {"turn": 2, "phrases": ["the red label"], "relation": "refine",
                "granularity": "medium", "overlap": {"iou": 0.2, "inside_previous": 1.0, ...}},
     "time": "2026-01-01T12:00:00Z"}

``intent`` is the focus this turn set (``null`` when it had no target): how the user's target
moved (first / same / refine / broaden / switch). A session (:class:`SessionRecord`) is
``{"schema_version", "image_size": [H, W], "reply": <its last turn>, "history": [turns],
"intent": {"focuses", "transitions", "summary"}}``. Masks are compressed COCO RLE at the
image's (oriented) size; boxes are ``(x0, y0, x1, y1)`` pixels with ``x1``/``y1`` exclusive.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pixelagent.intent import Focus, IntentState
from pixelagent.mask import Granularity, Mask
from pixelagent.results import Reply, Target, Turn

if TYPE_CHECKING:
    from pixelagent.session import Session

__all__ = ["SCHEMA_VERSION", "FocusRecord", "ImageReference", "IntentRecord", "OverlapRecord", "RLE",
           "SavedSession", "SessionRecord", "TargetRecord", "TurnRecord", "session_record", "turn_record",
           "validation_message"]

SCHEMA_VERSION = 1

_FROZEN = ConfigDict(frozen=True)


class RLE(BaseModel):
    """A compressed COCO run-length encoding of a mask: ``size`` is ``[H, W]``."""

    model_config = _FROZEN

    size: tuple[int, int]
    counts: str

    def to_mask(self) -> Mask:
        """The mask it encodes (runs checked; :class:`~pixelagent.errors.MaskError` if corrupt)."""
        return Mask.from_rle({"size": list(self.size), "counts": self.counts})


class TargetRecord(BaseModel):
    """One segmented thing: its phrase, mask, box, decoder score and granularity."""

    model_config = _FROZEN

    phrase: str
    mask: RLE
    bbox: tuple[int, int, int, int]
    score: float = Field(ge=0.0, le=1.0)
    granularity: Granularity
    area: int = Field(ge=1)

    @classmethod
    def of(cls, target: Target) -> TargetRecord:
        return cls(phrase=target.phrase, mask=RLE(**target.mask.to_rle()), bbox=target.bbox,
                   score=target.score, granularity=target.granularity, area=target.area)


class OverlapRecord(BaseModel):
    """How a focus's mask sits against the previous one (fractions in [0, 1])."""

    model_config = _FROZEN

    iou: float
    inside_previous: float
    covers_previous: float


class FocusRecord(BaseModel):
    """The focus a turn set, without its mask (the turn's targets hold it)."""

    model_config = _FROZEN

    turn: int = Field(ge=1)
    phrases: list[str]
    relation: Literal["first", "same", "refine", "broaden", "switch"]
    granularity: Granularity
    overlap: Optional[OverlapRecord] = None

    @classmethod
    def of(cls, focus: Focus) -> FocusRecord:
        overlap = None if focus.overlap is None else OverlapRecord(**focus.overlap.model_dump())
        return cls(turn=focus.turn, phrases=list(focus.phrases), relation=focus.relation.value,
                   granularity=focus.granularity, overlap=overlap)


class TurnRecord(BaseModel):
    """One question and its reply, as every JSON output gives it (see the module docstring)."""

    model_config = _FROZEN

    schema_version: int = SCHEMA_VERSION
    turn: int = Field(ge=1)
    question: str
    text: str
    raw_text: str = ""
    targets: list[TargetRecord] = []
    no_target: bool
    reason: Optional[str] = None
    notes: list[str] = []
    intent: Optional[FocusRecord] = None
    time: datetime

    @classmethod
    def of(cls, turn: Turn, focus: Focus | None = None, notes: tuple[str, ...] | list[str] = ()) -> TurnRecord:
        """The record of ``turn``; ``focus`` is the focus it set, ``notes`` extra lines to add."""
        reply = turn.reply
        return cls(turn=turn.index, question=turn.question, text=reply.text, raw_text=reply.raw_text,
                   targets=[TargetRecord.of(t) for t in reply.targets], no_target=reply.no_target,
                   reason=reply.reason, notes=[*reply.notes, *notes],
                   intent=None if focus is None else FocusRecord.of(focus), time=turn.time)

    def to_turn(self) -> Turn:
        """Back to a :class:`~pixelagent.results.Turn` (masks decoded; extra notes kept)."""
        targets = [Target(phrase=t.phrase, mask=t.mask.to_mask(), score=t.score) for t in self.targets]
        reply = Reply(text=self.text, raw_text=self.raw_text, targets=targets, reason=self.reason,
                      notes=list(self.notes))
        return Turn(index=self.turn, question=self.question, reply=reply, time=self.time)


class IntentRecord(BaseModel):
    """The focus history: one record per turn that had a target, plus readable lines."""

    model_config = _FROZEN

    focuses: list[FocusRecord] = []
    transitions: list[str] = []
    summary: str = "no focus yet"

    @classmethod
    def of(cls, intent: IntentState) -> IntentRecord:
        return cls(focuses=[FocusRecord.of(f) for f in intent.focuses], transitions=intent.transitions(),
                   summary=intent.describe())


class SessionRecord(BaseModel):
    """A whole conversation: the image size, every turn, and the intent."""

    model_config = _FROZEN

    schema_version: int = SCHEMA_VERSION
    image_size: tuple[int, int]
    reply: Optional[TurnRecord] = None
    history: list[TurnRecord] = []
    intent: IntentRecord = IntentRecord()


def focus_of(intent: IntentState, index: int) -> Focus | None:
    """The focus turn ``index`` set, if it had a target."""
    return next((f for f in intent.focuses if f.turn == index), None)


def turn_record(turn: Turn, intent: IntentState, notes: tuple[str, ...] | list[str] = ()) -> TurnRecord:
    """``turn`` as a record, its focus looked up in ``intent``."""
    return TurnRecord.of(turn, focus_of(intent, turn.index), notes)


def session_record(session: Session, notes: dict[int, list[str]] | None = None) -> SessionRecord:
    """The record of ``session``; ``notes`` maps a turn index to extra lines for that turn."""
    intent = session.intent
    notes = notes or {}
    history = [turn_record(t, intent, notes.get(t.index, ())) for t in session.history]
    return SessionRecord(image_size=session.image_size, reply=history[-1] if history else None,
                         history=history, intent=IntentRecord.of(intent))


# -- saved sessions ------------------------------------------------------------------------------
SAVED_FORMAT = "pixelagent-session"
SAVED_FORMAT_VERSION = 1


class ImageReference(BaseModel):
    """Where a saved session's image is: a file named by path, or ``image.png`` beside it.

    ``sha256`` is the digest of the file's bytes (of ``image.png`` when ``embedded``), so that a
    changed image is detected on load; ``size`` is ``[H, W]`` after EXIF orientation.
    """

    model_config = _FROZEN

    embedded: bool
    path: Optional[str] = None  # absolute path of the image file (None when embedded)
    relative: Optional[str] = None  # the same file relative to the session folder, tried second
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: tuple[int, int]


class SavedSession(SessionRecord):
    """``session.json`` of a folder written by :meth:`pixelagent.Session.save`.

    The session record (history with masks, intent) plus ``format`` (``"pixelagent-session"``),
    ``format_version`` (1), the preset the session ran on, when it was saved and the
    :class:`ImageReference`. Encodings are not saved: they are recomputed on load.
    """

    format: Literal["pixelagent-session"] = SAVED_FORMAT
    format_version: int = SAVED_FORMAT_VERSION
    preset: str
    saved: datetime
    image: ImageReference


def validation_message(error: ValidationError, what: str, limit: int = 3) -> str:
    """One line from a pydantic ``ValidationError``: ``what: field.path: problem; ...``."""
    problems = []
    for item in error.errors()[:limit]:
        where = ".".join(str(part) for part in item["loc"]) or "(top level)"
        problems.append(f"{where}: {item['msg']}")
    more = error.error_count() - len(problems)
    tail = f" (and {more} more)" if more > 0 else ""
    return f"{what}: {'; '.join(problems)}{tail}".replace("\n", " ")
