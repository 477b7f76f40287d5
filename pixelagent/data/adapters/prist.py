"""PRIST dialogues (either on-disk format) as training examples.

Two sources, one of them:

- ``dataset_dir`` + ``split``: our canonical JSON Lines directory (``DIR/<split>.jsonl``, images
  relative to ``DIR``), read one record at a time (:func:`pixelagent.data.records.read_records`).
- ``published_json`` (+ ``annotations_dir`` of LabelMe files, ``images_dir``): the published
  ``test.json`` format, via :func:`pixelagent.data.prist.load_published` (bare ``[SEG]``
  becomes ``[OBJ]{focus}[SEG]``). ``images_dir`` defaults to ``images/`` beside the JSON.

Example ``i`` is kept record ``i``: its turns as they are and ``masks`` ``(n, H, W)``, one per
``[SEG]``. A record whose ``[SEG]`` has no mask (``None`` or no pixel, e.g. a LabelMe label that
matches no shape of its LabelMe file) is refused with a ConfigError, or with
``allow_missing_masks=True`` skipped and counted in ``skipped`` (their ids in ``skipped_ids``).
Other bad records (an image path outside the folder, a malformed LabelMe file) always raise.
Image paths are joined to the folder with :func:`~pixelagent.data.records.resolve_in`, which
refuses absolute paths and paths that climb out with ``..``. Masks are kept as COCO RLE
and decoded per example, so a large split does not sit decoded in memory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np

from pixelagent.data.examples import TrainingExample, check_index, existing_path, no_masks
from pixelagent.data.prist import LabelMatch, NoMatchingShape, Skipped, iter_published
from pixelagent.data.records import PristRecord, load_split, read_records, resolve_in, split_path
from pixelagent.errors import ConfigError
from pixelagent.mask import Mask

MISSING_HINT = ("pass allow_missing_masks=True to skip such records (the published split ships without "
                "its LabelMe files: give annotations_dir)")


class PristDataset:
    """PRIST records with their target masks (see the module docstring)."""

    def __init__(self, dataset_dir: str | Path | None = None, split: str | None = None, *,
                 published_json: str | Path | None = None, annotations_dir: str | Path | None = None,
                 images_dir: str | Path | None = None, label_match: LabelMatch = "contains",
                 name: str = "prist", allow_missing_masks: bool = False) -> None:
        if (dataset_dir is None) == (published_json is None):
            raise ConfigError("give either dataset_dir (canonical format) or published_json (published format)")
        self.name, self.allow_missing_masks = name, allow_missing_masks
        self.skipped, self.skipped_ids = 0, []
        if dataset_dir is not None:
            self.root = existing_path(dataset_dir, "PRIST dataset directory", "dir")
            self.where = str(split_path(self.root, split or "train"))
            records: Iterable[PristRecord] = _canonical(self.root, split or "train")
        else:
            json_path = existing_path(published_json, "published PRIST file")
            if annotations_dir is not None:
                existing_path(annotations_dir, "LabelMe annotations directory", "dir")
            self.root = existing_path(images_dir or json_path.parent / "images", "images directory", "dir")
            self.where = str(json_path)
            records = self._published(iter_published(json_path, annotations_dir=annotations_dir, images_prefix="",
                                                     split=split or "test", label_match=label_match))
        self.items = [item for item in map(self._compact, records) if item is not None]
        if not self.items:
            raise ConfigError(f"{self.where}: no record with target masks ({self.skipped} skipped)")

    def _published(self, items: Iterable[PristRecord | Skipped]) -> Iterable[PristRecord]:
        """The records of a published file; one whose focus has no mask is skipped (and counted)
        when ``allow_missing_masks``, any other bad one raises its ConfigError."""
        for item in items:
            if not isinstance(item, Skipped):
                yield item
            elif self.allow_missing_masks and isinstance(item.error, NoMatchingShape):
                self.skipped += 1
                self.skipped_ids.append(item.id)
            else:
                raise item.error

    def _compact(self, record: PristRecord) -> tuple | None:
        """``(id, image, turns, [RLE per [SEG]])``, or None for a skipped record."""
        missing = _missing_phrase(record)
        if missing is not None:
            if not self.allow_missing_masks:
                raise ConfigError(f"{self.where}: record {record.id} has no mask for {missing!r}; {MISSING_HINT}")
            self.skipped += 1
            self.skipped_ids.append(record.id)
            return None
        shapes = {t.mask.shape for t in record.targets}
        if len(shapes) > 1:
            raise ConfigError(f"{self.where}: record {record.id} has masks of different sizes {sorted(shapes)}")
        return record.id, record.image, tuple(record.turns), [t.mask.to_rle() for t in record.targets]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> TrainingExample:
        record_id, image, turns, rles = self.items[check_index(index, len(self), self.name)]
        masks = np.stack([Mask.from_rle(rle).array for rle in rles]) if rles else no_masks()
        return TrainingExample(source=self.name, id=record_id, turns=list(turns), masks=masks,
                               image=resolve_in(self.root, image, f"{self.where}: record {record_id}"))


def _canonical(directory: Path, split: str) -> Iterable[PristRecord]:
    path = split_path(directory, split)
    if not path.exists():
        load_split(directory, split)  # raises the ConfigError that names the splits present
    return read_records(path)


def _missing_phrase(record: PristRecord) -> str | None:
    """The phrase of the first ``[SEG]`` without a usable mask; None when every one has one."""
    if record.seg_count and not record.targets:
        return record.focus
    for target in record.targets:
        if target.mask is None or target.mask.is_empty:
            return target.phrase
    return None
