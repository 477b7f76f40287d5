"""Intent tracking: what the user is after, turn by turn, decided from the masks.

Each turn whose reply has a target becomes a :class:`Focus`. Its relation to the previous
focus is read off the two masks (``new`` and ``prev``; the union of targets when several):

- **same**: IoU(new, prev) ≥ :data:`SAME_IOU` (0.85): the same region, re-asked or re-named.
- **refine**: at least :data:`INSIDE_FRACTION` (80 %) of ``new`` lies inside ``prev`` and
  ``new`` is smaller: the dialogue narrowed ("the bottle" → "its label").
- **broaden**: at least 80 % of ``prev`` lies inside ``new`` and ``new`` is larger
  ("the label" → "the whole bottle").
- **switch**: anything else: attention moved to something else.

80 % rather than 100 % because a part's annotated outline may stray a few pixels past its
parent's (a word's polygon over a label's edge). 0.85 IoU sits above the agreement of two
PRIST annotators outlining one object (IoU > 0.80, paper Table 1), so two outlines of the same
thing count as the same focus.
"""

from __future__ import annotations

from enum import Enum
from typing import Optional

from pydantic import BaseModel, ConfigDict

from pixelagent.mask import Granularity, Mask
from pixelagent.results import Reply

SAME_IOU = 0.85
INSIDE_FRACTION = 0.8


class Relation(str, Enum):
    FIRST = "first"
    SAME = "same"
    REFINE = "refine"
    BROADEN = "broaden"
    SWITCH = "switch"


class Overlap(BaseModel):
    """How a new mask sits against the previous one (all fractions in [0, 1])."""

    model_config = ConfigDict(frozen=True)

    iou: float
    inside_previous: float  # |new ∩ prev| / |new|
    covers_previous: float  # |new ∩ prev| / |prev|


def relate(new: Mask, prev: Mask) -> tuple[Relation, Overlap]:
    """The relation of ``new`` to ``prev`` by the rule in this module's docstring."""
    inter = new.intersection(prev)
    overlap = Overlap(
        iou=new.iou(prev),
        inside_previous=inter / new.area if new.area else 0.0,
        covers_previous=inter / prev.area if prev.area else 0.0,
    )
    if overlap.iou >= SAME_IOU:
        return Relation.SAME, overlap
    if overlap.inside_previous >= INSIDE_FRACTION and new.area < prev.area:
        return Relation.REFINE, overlap
    if overlap.covers_previous >= INSIDE_FRACTION and new.area > prev.area:
        return Relation.BROADEN, overlap
    return Relation.SWITCH, overlap


class Focus(BaseModel):
    """The user's target as of one turn."""

    model_config = ConfigDict(arbitrary_types_allowed=True, frozen=True)

    turn: int
    phrases: list[str]
    mask: Mask
    granularity: Granularity
    relation: Relation
    overlap: Optional[Overlap] = None  # None for the first focus

    @property
    def phrase(self) -> str:
        return "; ".join(self.phrases)


class IntentState(BaseModel):
    """The focus history of one session, oldest first."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    focuses: list[Focus] = []

    @property
    def current(self) -> Focus | None:
        return self.focuses[-1] if self.focuses else None

    def update(self, turn: int, reply: Reply) -> Focus | None:
        """Record ``reply``'s targets as the focus of ``turn``; a no-target reply changes nothing."""
        mask = reply.mask
        if mask is None:
            return None
        previous = self.current
        relation, overlap = (Relation.FIRST, None) if previous is None else relate(mask, previous.mask)
        focus = Focus(turn=turn, phrases=reply.phrases, mask=mask, granularity=mask.granularity,
                      relation=relation, overlap=overlap)
        self.focuses.append(focus)
        return focus

    def transitions(self) -> list[str]:
        """One line per focus, e.g. ``"turn 3: 'its label' (refine, medium)"``."""
        return [f"turn {f.turn}: {f.phrase!r} ({f.relation.value}, {f.granularity.value})"
                for f in self.focuses]

    def describe(self) -> str:
        """A one-line summary for prompts and logs: ``"'the bottle' → 'its label'"``."""
        return " → ".join(repr(f.phrase) for f in self.focuses) or "no focus yet"
