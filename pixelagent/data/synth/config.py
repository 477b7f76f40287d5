"""Settings of a PRIST-Synth run (validated; every field has a working default)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

GRANULARITY_MIX = (0.22, 0.25, 0.53)
"""PRIST's coarse : medium : fine share of targets (paper, Table 2)."""


def _check_shares(value: tuple[float, float, float], what: str) -> tuple[float, float, float]:
    if any(v < 0 for v in value) or abs(sum(value) - 1.0) > 1e-6:
        raise ValueError(f"{what} must be three non-negative shares that sum to 1; got {value}")
    return value


class SynthConfig(BaseModel):
    """What to generate.

    Attributes:
        n: number of samples (dialogues) in all splits together.
        size: side of the square images in pixels (128 to 1024).
        seed: the run's seed; the same seed and settings give byte-identical output.
        samples_per_image: dialogues per image, each about a different target.
        splits: train / val / test shares of the *images* (an image never spans two splits).
        granularity_mix: coarse / medium / fine shares of targets (PRIST Table 2 rule).
        min_objects, max_objects: objects per scene.
        min_turns, max_turns: question/answer pairs per dialogue, the segmentation turn included
            (``reasoning`` style).
        style: ``reasoning`` (PRIST's: questions narrow toward the target, one segmentation
            request at the end) or ``narrowing`` (every turn asks for a mask: the object, then
            "its label", then "the word on it", sometimes going back to the object or switching
            to another one; one target per turn).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    n: int = Field(200, ge=1)
    size: int = Field(256, ge=128, le=1024)
    seed: int = Field(0, ge=0)
    samples_per_image: int = Field(3, ge=1, le=6)
    splits: tuple[float, float, float] = (0.8, 0.1, 0.1)
    granularity_mix: tuple[float, float, float] = GRANULARITY_MIX
    min_objects: int = Field(2, ge=2, le=5)
    max_objects: int = Field(5, ge=2, le=5)
    min_turns: int = Field(2, ge=1, le=6)
    max_turns: int = Field(6, ge=1, le=6)
    style: Literal["reasoning", "narrowing"] = "reasoning"

    @field_validator("splits")
    @classmethod
    def _splits(cls, value: tuple[float, float, float]) -> tuple[float, float, float]:
        return _check_shares(value, "splits (train, val, test)")

    @field_validator("granularity_mix")
    @classmethod
    def _mix(cls, value: tuple[float, float, float]) -> tuple[float, float, float]:
        return _check_shares(value, "granularity_mix (coarse, medium, fine)")

    @model_validator(mode="after")
    def _ranges(self) -> SynthConfig:
        if self.min_objects > self.max_objects:
            raise ValueError(f"min_objects ({self.min_objects}) exceeds max_objects ({self.max_objects})")
        if self.min_turns > self.max_turns:
            raise ValueError(f"min_turns ({self.min_turns}) exceeds max_turns ({self.max_turns})")
        return self

    @property
    def images(self) -> int:
        """Number of images: ``ceil(n / samples_per_image)`` (the last may carry fewer samples)."""
        return -(-self.n // self.samples_per_image)
