"""Table-2-style statistics of a canonical dataset directory (any source, not only PRIST-Synth).

Granularity comes from the target masks by the PRIST rule (``classify_granularity``, the COCO
thresholds rescaled to the image's longest side); targets without a mask are not counted there.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from pydantic import BaseModel

from pixelagent.data.records import SPLITS, PristRecord, read_records
from pixelagent.errors import ConfigError
from pixelagent.mask import Granularity, classify_granularity

GRANULARITIES = tuple(g.value for g in Granularity)  # coarse, medium, fine
TARGET_KINDS = ("object", "part", "text")


class SplitStats(BaseModel):
    """Statistics of one split (or of all splits together).

    ``turns`` are question/answer pairs per dialogue (segmentation turn included);
    ``utterances`` are messages; ``granularity`` holds shares in [0, 1] over the ``masks``
    targets that have a mask, ``granularity_counts`` the counts; ``focus_words`` is the mean
    focus phrase length in words; ``kinds`` counts targets by kind (object / part / text).
    """

    samples: int = 0
    images: int = 0
    utterances: int = 0
    mean_turns: float = 0.0
    min_turns: int = 0
    max_turns: int = 0
    masks: int = 0
    granularity: dict[str, float] = {g: 0.0 for g in GRANULARITIES}
    granularity_counts: dict[str, int] = {g: 0 for g in GRANULARITIES}
    focus_words: float = 0.0
    kinds: dict[str, int] = {k: 0 for k in TARGET_KINDS}


class Stats(BaseModel):
    """Per-split statistics of ``directory`` (splits that have a file) and their ``total``."""

    directory: str
    splits: dict[str, SplitStats]
    total: SplitStats


def split_stats(records: Iterable[PristRecord]) -> SplitStats:
    """Statistics of some records."""
    records = list(records)
    if not records:
        return SplitStats()
    turns = [len(r.messages) // 2 for r in records]
    grains = Counter(_granularity(r, t) for r in records for t in r.targets if t.mask is not None)
    masks = sum(grains.values())
    kinds = Counter(t.kind for r in records for t in r.targets if t.kind)
    return SplitStats(
        samples=len(records), images=len({r.image for r in records}),
        utterances=sum(len(r.messages) for r in records),
        mean_turns=sum(turns) / len(turns), min_turns=min(turns), max_turns=max(turns), masks=masks,
        granularity={g: (grains[g] / masks if masks else 0.0) for g in GRANULARITIES},
        granularity_counts={g: grains[g] for g in GRANULARITIES},
        focus_words=sum(len(r.focus.split()) for r in records) / len(records),
        kinds={k: kinds[k] for k in TARGET_KINDS})


def _granularity(record: PristRecord, target) -> str:
    size = tuple(record.image_size) if record.image_size else target.mask.shape
    return classify_granularity(target.mask.area, size).value


def dataset_stats(directory: str | os.PathLike) -> Stats:
    """Statistics of every split file in ``directory`` and of all of them together."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ConfigError(f"{directory} is not a directory; point at a dataset folder holding "
                          f"{', '.join(s + '.jsonl' for s in SPLITS)}")
    present = [s for s in SPLITS if (directory / f"{s}.jsonl").is_file()]
    if not present:
        raise ConfigError(f"no split files in {directory}; expected {', '.join(s + '.jsonl' for s in SPLITS)}")
    records = {s: list(read_records(directory / f"{s}.jsonl")) for s in present}
    return Stats(directory=str(directory), splits={s: split_stats(records[s]) for s in present},
                 total=split_stats(r for s in present for r in records[s]))


def table_rows(stats: Stats) -> tuple[list[str], list[list[str]]]:
    """Column headers and rows of the Table-2-style summary (one column per split, then "all")."""
    columns = {**stats.splits, "all": stats.total}
    rows = [
        ("Total Images", lambda s: f"{s.images:,}"),
        ("Total Samples", lambda s: f"{s.samples:,}"),
        ("Number of Utterances", lambda s: f"{s.utterances:,}"),
        ("Avg. / Min / Max Turns", lambda s: f"{s.mean_turns:.2f} / {s.min_turns} / {s.max_turns}"),
        ("Granularity (Coarse: Med.: Fine)",
         lambda s: ": ".join(f"{round(100 * s.granularity[g])}%" for g in GRANULARITIES) if s.masks else "n/a"),
        ("Avg. Focus Length (words)", lambda s: f"{s.focus_words:.1f}"),
        ("Targets (object / part / text)", lambda s: " / ".join(str(s.kinds[k]) for k in TARGET_KINDS)),
    ]
    return ["Statistic", *columns], [[label, *(cell(s) for s in columns.values())] for label, cell in rows]
