"""Does the phrase a model named agree with the true focus? Words it read, places, colours.

Masks say *where* a model looked; the phrase of its ``[OBJ]…[SEG]`` span says *what* it thinks
it found, and that is where a small model's mistakes show first (it names the right kind of
object in the wrong place, or reads the wrong word off a sign). Three checks, each counted only
on dialogues whose true focus has what it checks:

- **text**: the focus quotes a word (``the title 'JAZZ' on the book's cover``); correct when the
  first word the model quoted is that word, exactly.
- **place**: the focus names a place (top, bottom, left, right, centre); correct when the model
  named exactly the same place words (``top left`` is not ``top``).
- **colour**: the focus names basic colour words; correct when the model named all of them.

Pure text; no model, no torch.
"""

from __future__ import annotations

import re
from typing import Optional

PLACE_WORDS = frozenset({"top", "bottom", "left", "right", "centre", "center", "middle"})
COLOUR_WORDS = frozenset({"red", "orange", "yellow", "green", "blue", "purple", "pink", "white", "black",
                          "gray", "grey", "brown"})
CHECKS = ("text", "place", "colour")
_QUOTED = re.compile(r"(?<![A-Za-z])'([^']+)'")  # an opening quote follows no letter: not "book's"
_WORD = re.compile(r"[a-z]+")


def text_reading(answer: str, reference: str) -> Optional[dict]:
    """The quoted word of a text target in ``answer`` against ``reference``:
    ``{"said", "truth", "correct"}``, or None when the reference quotes no word."""
    truth = _QUOTED.findall(reference)
    if not truth:
        return None
    said = _QUOTED.findall(answer)
    return {"said": said[0] if said else None, "truth": truth[0], "correct": bool(said) and said[0] == truth[0]}


def _words(text: str, vocabulary: frozenset) -> frozenset:
    return frozenset(_WORD.findall(_QUOTED.sub(" ", text.lower()))) & vocabulary


class FocusPhraseMeter:
    """Counts, over dialogues, how often the named phrase agrees with the true focus.

    ``add(named, focus)``: ``named`` is the model's phrase (None when it named none: every check
    the focus calls for counts as wrong), ``focus`` the true one.
    """

    def __init__(self) -> None:
        self.counts = {check: {"asked": 0, "correct": 0} for check in CHECKS}
        self.dialogues = 0

    def add(self, named: Optional[str], focus: str) -> None:
        self.dialogues += 1
        said = named or ""
        reading = text_reading(said, focus)
        if reading is not None:
            self._count("text", reading["correct"])
        places = _words(focus, PLACE_WORDS)
        if places:
            self._count("place", _words(said, PLACE_WORDS) == places)
        colours = _words(focus, COLOUR_WORDS)
        if colours:
            self._count("colour", colours <= _words(said, COLOUR_WORDS))

    def _count(self, check: str, correct: bool) -> None:
        self.counts[check]["asked"] += 1
        self.counts[check]["correct"] += int(correct)

    def result(self) -> dict:
        """``{"dialogues": n, "text" | "place" | "colour": {"asked", "correct", "rate"}}``; the
        rate is None where nothing was asked."""
        out: dict = {"dialogues": self.dialogues}
        for check, count in self.counts.items():
            out[check] = {**count, "rate": count["correct"] / count["asked"] if count["asked"] else None}
        return out
