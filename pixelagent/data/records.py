"""The canonical on-disk format of pixelagent datasets: JSON Lines of validated records.

A dataset is a directory::

    DIR/
      train.jsonl  val.jsonl  test.jsonl     one PristRecord per line
      images/...                             image files, referenced by relative path

Each record is one dialogue about one image. Its answers carry ``[OBJ]phrase[SEG]`` markup and
``targets`` holds one annotation per ``[SEG]``, in order, with the mask as COCO RLE (and the
polygons where they are known, for export to the published LabelMe-based format).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pixelagent.errors import ConfigError
from pixelagent.markup import find_focus_spans
from pixelagent.mask import Granularity, Mask

Split = Literal["train", "val", "test"]
SPLITS: tuple[str, ...] = ("train", "val", "test")
Polygon = list[tuple[float, float]]


class Message(BaseModel):
    """One utterance: ``role`` is "user" or "assistant"."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    role: Literal["user", "assistant"]
    text: str


class TargetAnnotation(BaseModel):
    """The ground truth of one ``[SEG]``.

    Attributes:
        phrase: the focus phrase (what ``[OBJ]…[SEG]`` names).
        mask: the target's pixels (COCO RLE on disk); None where the source has no masks
            (the published test split ships without its LabelMe files).
        polygons: outlines in pixel (x, y), as an annotator drew them, when known.
        kind: "object", "part" or "text" where the source says so.
        parent: the whole object a part or word belongs to, where known (PRIST-Synth writes
            it): evaluation uses it to check that a fine target's mask is the target, not its
            object.
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    phrase: str
    mask: Optional[Mask] = None
    polygons: list[Polygon] = []
    kind: Optional[Literal["object", "part", "text"]] = None
    parent: Optional[Mask] = None

    @property
    def granularity(self) -> Granularity | None:
        return None if self.mask is None else self.mask.granularity


class PristRecord(BaseModel):
    """One multi-turn segmentation dialogue about one image.

    ``messages`` alternate user / assistant, starting with the user; the assistant's ``[SEG]``
    tokens match ``targets`` one to one, in order. ``image`` is relative to the dataset
    directory; ``image_size`` is (H, W). ``elements`` and ``reasoning_path`` keep the
    generation pipeline's intermediate results (paper Figure 7a/7b) where there are any.
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    id: str
    image: str
    image_size: Optional[tuple[int, int]] = None
    messages: list[Message] = Field(min_length=2)
    focus: str
    targets: list[TargetAnnotation] = []
    split: Optional[Split] = None
    source: str = "prist"
    elements: list[dict] = []
    reasoning_path: list[str] = []

    @model_validator(mode="after")
    def _consistent(self) -> PristRecord:
        roles = [m.role for m in self.messages]
        if roles != ["user", "assistant"] * (len(roles) // 2) or len(roles) % 2:
            raise ValueError("messages must alternate user, assistant, ... and end with the assistant")
        seg_count = sum(len(find_focus_spans(m.text)) for m in self.messages if m.role == "assistant")
        if self.targets and len(self.targets) != seg_count:
            raise ValueError(f"{seg_count} [SEG] tokens in the answers but {len(self.targets)} targets")
        for target in self.targets:
            if target.mask is not None and self.image_size and target.mask.shape != tuple(self.image_size):
                raise ValueError(f"mask of {target.phrase!r} is {target.mask.shape}, image is {self.image_size}")
        return self

    @property
    def turns(self) -> list[tuple[str, str]]:
        """(question, answer) pairs."""
        return [(self.messages[i].text, self.messages[i + 1].text) for i in range(0, len(self.messages), 2)]

    @property
    def seg_count(self) -> int:
        return sum(len(find_focus_spans(a)) for _, a in self.turns)


def read_records(path: str | os.PathLike) -> Iterator[PristRecord]:
    """Records of one JSON Lines file; a bad line raises ConfigError naming file, line and field."""
    path = Path(path)
    try:
        handle = path.open(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    with handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                yield parse_record(line, f"{path}:{number}")


def parse_record(line: str, where: str) -> PristRecord:
    """One record from its JSON text; ``where`` ("file:line") goes into the error message."""
    try:
        return PristRecord.model_validate_json(line)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '<record>'}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"{where}: invalid record: {problems}") from None


def write_records(path: str | os.PathLike, records: Iterable[PristRecord], append: bool = False) -> int:
    """Write (or append) records as JSON Lines; returns how many were written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with path.open("a" if append else "w", encoding="utf-8") as handle:
        for record in records:
            handle.write(record.model_dump_json(exclude_defaults=True) + "\n")
            count += 1
    return count


def split_path(directory: str | os.PathLike, split: str) -> Path:
    """``DIR/<split>.jsonl``, refusing unknown split names."""
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    return Path(directory) / f"{split}.jsonl"


def load_split(directory: str | os.PathLike, split: str) -> list[PristRecord]:
    """All records of one split of a canonical dataset directory."""
    path = split_path(directory, split)
    if not path.is_file():
        present = sorted(p.stem for p in Path(directory).glob("*.jsonl")) or ["none"]
        raise ConfigError(f"no {split} split in {directory} (looked for {path.name}); "
                          f"splits there: {', '.join(present)}")
    return list(read_records(path))
