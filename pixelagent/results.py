"""What a turn gives back: targets, replies, turns. Pydantic, so they serialise to JSON
(masks as COCO RLE) for CLIs, tools and prediction files."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field, computed_field

from pixelagent.mask import Granularity, Mask


class Target(BaseModel):
    """One segmented thing a reply points at.

    Attributes:
        phrase: the focus phrase (``[OBJ]phrase[SEG]``, or the parsed box's label).
        mask: its pixels at the original (oriented) image size.
        score: the decoder's confidence in [0, 1].
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, frozen=True)

    phrase: str
    mask: Mask
    score: float = Field(ge=0.0, le=1.0)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def bbox(self) -> tuple[int, int, int, int]:
        """Tight box ``(x0, y0, x1, y1)`` in pixels, ``x1``/``y1`` exclusive."""
        return self.mask.bbox  # never empty: the session drops empty masks

    @computed_field  # type: ignore[prop-decorator]
    @property
    def granularity(self) -> Granularity:
        """coarse / medium / fine by the PRIST Table 2 rule at this image's size."""
        return self.mask.granularity

    @computed_field  # type: ignore[prop-decorator]
    @property
    def area(self) -> int:
        """Mask area in pixels."""
        return self.mask.area


class Reply(BaseModel):
    """The answer to one question: text plus zero, one or several targets.

    ``targets == []`` is the explicit no-target result (``reply.no_target`` is True and
    ``reply.mask`` is None); ``reason`` then says why when the model did try to segment.
    ``notes`` say how the reply was made when the user should know (earlier exchanges left out
    of the model's context window, say), one line each.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, frozen=True)

    text: str
    raw_text: str = ""
    targets: list[Target] = []
    reason: Optional[str] = None
    notes: list[str] = []

    @computed_field  # type: ignore[prop-decorator]
    @property
    def no_target(self) -> bool:
        return not self.targets

    @property
    def mask(self) -> Mask | None:
        """The union of all target masks, or None when there is no target."""
        return Mask.union_all(t.mask for t in self.targets)

    @property
    def phrases(self) -> list[str]:
        return [t.phrase for t in self.targets]

    def overlay(self, image: Any, **options: Any) -> Any:
        """The image with every target in its own colour, a contour and a legend (phrase and
        granularity), scaled up when small: a PIL image (see :func:`pixelagent.overlay.render`)."""
        from pixelagent.overlay import layers_of, render

        return render(image, layers_of(self), **options)


class Turn(BaseModel):
    """One question and its reply, numbered from 1 within the session."""

    model_config = ConfigDict(arbitrary_types_allowed=True, frozen=True)

    index: int
    question: str
    reply: Reply
    time: datetime = Field(default_factory=lambda: datetime.now(timezone.utc))
