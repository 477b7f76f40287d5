"""Bounds on what a session accepts, so that text from apps and calling models cannot exhaust it.

A preset's ``limits`` (``Agent(preset, limits={...})``, or ``limits:`` in a preset file) say:

- ``max_question_chars`` (default 8,000): the longest question a turn accepts. Longer text is
  refused before anything is tokenised or allocated, in microseconds. 8,000 characters is about
  2,000 LLaMA tokens: with LLaVA's 576 visual tokens and room for a 256-token answer it still fits
  the 4,096-token window of LLaVA-v1.6-vicuna with earlier turns beside it.
- ``max_turns`` (default 200): turns a session keeps before it asks to be reset. Each turn keeps
  its reply's masks (H×W bytes each: 1 MB per mask at 1024×1024), so this bounds a session's
  memory whatever it is sent.
- ``context_policy`` (default ``drop-oldest``): what a backbone does when the dialogue no longer
  fits its context window. ``drop-oldest`` leaves the oldest exchanges out of the prompt (the
  image, the session's history and its intent state are kept; the reply's ``notes`` say how many
  were left out); ``refuse`` raises :class:`~pixelagent.errors.InputError` instead. A single
  question that cannot fit even alone is refused under both.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from pixelagent.errors import InputError

ContextPolicy = Literal["drop-oldest", "refuse"]

DEFAULT_MAX_QUESTION_CHARS = 8_000
DEFAULT_MAX_TURNS = 200


class Limits(BaseModel):
    """What one session accepts (see the module docstring for the reasons behind the defaults)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_question_chars: int = Field(DEFAULT_MAX_QUESTION_CHARS, ge=1)
    max_turns: int = Field(DEFAULT_MAX_TURNS, ge=1)
    context_policy: ContextPolicy = "drop-oldest"


def check_question(question: object, limits: Limits) -> str:
    """``question`` if it is usable text within ``limits``, else one-line :class:`InputError`.

    The length is checked first, so an oversized question costs O(1), not O(len).
    """
    if not isinstance(question, str):
        raise InputError(f"a question must be a str, got {type(question).__name__}")
    if len(question) > limits.max_question_chars:
        raise InputError(
            f"the question is {len(question):,} characters, over the limit of {limits.max_question_chars:,} "
            "(limits.max_question_chars); shorten it, or raise the limit with "
            "Agent(preset, limits={'max_question_chars': N})")
    if not question.strip():
        raise InputError("the question is empty; ask something about the image")
    check_text_encodable(question, "the question")
    return question


def check_text_encodable(text: str, what: str) -> None:
    """Refuse text that is not valid Unicode (lone surrogates: what undecodable bytes become in
    ``sys.argv`` and in ``surrogateescape``-decoded input); tokenisers and JSON cannot take it."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InputError(f"{what} is not valid text: character {exc.start} is a lone surrogate "
                         f"(U+{ord(text[exc.start]):04X}), which is what undecodable bytes become; "
                         "pass UTF-8 text") from None


def check_turn_budget(turns_so_far: int, limits: Limits) -> None:
    """Refuse a new turn once a session holds ``limits.max_turns`` turns."""
    if turns_so_far >= limits.max_turns:
        raise InputError(
            f"this session already holds {turns_so_far} turns, the limit (limits.max_turns); call "
            "session.reset() or open a new session, or raise the limit with "
            "Agent(preset, limits={'max_turns': N})")
