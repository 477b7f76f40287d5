"""Table-2-style statistics of a dataset (any source, not only PRIST-Synth), in the paper's units.

The paper's Table 2 counts "utterances" and "turns" without defining them; the published test
split pins them down. Its 508 dialogues hold 3,942 messages, 1,971 question/answer rounds of
which 508 are the templated segmentation round, leaving 1,463 reasoning rounds: 2.88 per
dialogue, as the paper's 24k utterances over 8.3k dialogues (2.89). So:

* **utterances** (the paper's unit): the reasoning question/answer rounds, the segmentation
  round not counted;
* **turns**: the question/answer rounds of a dialogue, the segmentation round included (the
  paper's average of 4 turns; the published split has 3.88);
* **messages**: every message, user and assistant (what ``utterances`` counted before);
* **dialogue length**: characters of all the dialogue's messages with the special tokens
  removed (the segmentation answer read as "Sure, it is the label."), and words (whitespace
  tokens) beside it; the paper does not give its unit (its 477.6 / 518 matches neither: the
  published split has 514.7 / 769 characters and 84.0 / 123 words).

A segmentation round is a question/answer pair whose answer holds ``[SEG]``. Granularity comes
from the target masks by the PRIST rule (``classify_granularity``, the COCO thresholds rescaled
to the image's longest side); targets without a mask are not counted there.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Optional

from pydantic import BaseModel

from pixelagent.data.records import SPLITS, PristRecord, read_records
from pixelagent.errors import ConfigError
from pixelagent.markup import find_focus_spans, render_plain
from pixelagent.mask import Granularity, classify_granularity

GRANULARITIES = tuple(g.value for g in Granularity)  # coarse, medium, fine
TARGET_KINDS = ("object", "part", "text")

DEFINITIONS: dict[str, str] = {
    "utterances": "reasoning question/answer rounds (the paper's unit; the segmentation round not counted)",
    "turns": "question/answer rounds per dialogue, the segmentation round included",
    "messages": "every message, user and assistant",
    "dialogue length": "characters of all of a dialogue's messages, markup removed (words: whitespace tokens); "
                       "the paper does not state its unit",
    "granularity": "shares of the targets with a mask, by the PRIST Table 2 rule at the image's size",
}
"""What each label of :func:`table_rows` counts."""

PAPER_TABLE2: dict[str, str] = {
    "Total Images": "2,800", "Total Samples": "8,320", "Granularity (Coarse: Med.: Fine)": "22%: 25%: 53%",
    "Number of Utterances": "24k", "Avg. / Max Utterances per Dialogue": "2.9 / –",
    "Avg. / Min / Max Turns": "4 / – / 7", "Avg. / Max Dialogue Length": "477.6 / 518 (unit?)",
}
"""The paper's Table 2 (all splits together), for the ``--paper`` column of ``data stats``."""


class SplitStats(BaseModel):
    """Statistics of one split (or of all splits together); units as in the module docstring.

    ``utterances`` are reasoning rounds (``mean_utterances`` / ``max_utterances`` per dialogue);
    ``turns`` are rounds with the segmentation round (mean/min/max per dialogue); ``messages``
    every message; ``granularity`` holds shares in [0, 1] over the ``masks`` targets that have a
    mask, ``granularity_counts`` the counts; ``focus_words`` is the mean focus phrase length in
    words; ``kinds`` counts targets by kind (object / part / text).
    """

    samples: int = 0
    images: int = 0
    utterances: int = 0
    mean_utterances: float = 0.0
    max_utterances: int = 0
    messages: int = 0
    mean_turns: float = 0.0
    min_turns: int = 0
    max_turns: int = 0
    mean_dialogue_chars: float = 0.0
    max_dialogue_chars: int = 0
    mean_dialogue_words: float = 0.0
    max_dialogue_words: int = 0
    masks: int = 0
    granularity: dict[str, float] = {g: 0.0 for g in GRANULARITIES}
    granularity_counts: dict[str, int] = {g: 0 for g in GRANULARITIES}
    focus_words: float = 0.0
    kinds: dict[str, int] = {k: 0 for k in TARGET_KINDS}


class Stats(BaseModel):
    """Per-split statistics of ``directory`` (a dataset folder, or a published file) and their
    ``total``; ``definitions`` says what each count counts."""

    directory: str
    splits: dict[str, SplitStats]
    total: SplitStats
    definitions: dict[str, str] = DEFINITIONS


def _reasoning_rounds(record: PristRecord) -> int:
    return sum(1 for _, answer in record.turns if not find_focus_spans(answer))


def split_stats(records: Iterable[PristRecord]) -> SplitStats:
    """Statistics of some records."""
    records = list(records)
    if not records:
        return SplitStats()
    turns = [len(r.messages) // 2 for r in records]
    reasoning = [_reasoning_rounds(r) for r in records]
    plain = [[render_plain(m.text) for m in r.messages] for r in records]
    chars = [sum(map(len, texts)) for texts in plain]
    words = [sum(len(t.split()) for t in texts) for texts in plain]
    grains = Counter(_granularity(r, t) for r in records for t in r.targets if t.mask is not None)
    masks = sum(grains.values())
    kinds = Counter(t.kind for r in records for t in r.targets if t.kind)
    n = len(records)
    return SplitStats(
        samples=n, images=len({r.image for r in records}),
        utterances=sum(reasoning), mean_utterances=sum(reasoning) / n, max_utterances=max(reasoning),
        messages=sum(len(r.messages) for r in records),
        mean_turns=sum(turns) / n, min_turns=min(turns), max_turns=max(turns),
        mean_dialogue_chars=sum(chars) / n, max_dialogue_chars=max(chars),
        mean_dialogue_words=sum(words) / n, max_dialogue_words=max(words), masks=masks,
        granularity={g: (grains[g] / masks if masks else 0.0) for g in GRANULARITIES},
        granularity_counts={g: grains[g] for g in GRANULARITIES},
        focus_words=sum(len(r.focus.split()) for r in records) / n,
        kinds={k: kinds[k] for k in TARGET_KINDS})


def _granularity(record: PristRecord, target) -> str:
    size = tuple(record.image_size) if record.image_size else target.mask.shape
    return classify_granularity(target.mask.area, size).value


def dataset_stats(directory: str | os.PathLike, *, annotations: Optional[str | os.PathLike] = None,
                  split: str = "test") -> Stats:
    """Statistics of every split file in ``directory`` and of all of them together; a published
    PRIST file (``test.json``) instead of a folder is read unchanged as ``split`` (with its
    LabelMe ``annotations`` folder for the granularity, when given)."""
    directory = Path(directory)
    if directory.is_file():
        from pixelagent.data.prist import load_published

        records = load_published(directory, annotations_dir=annotations, split=split)
        stats = split_stats(records)
        return Stats(directory=str(directory), splits={split: stats}, total=stats)
    if not directory.is_dir():
        raise ConfigError(f"{directory} is not a directory; point at a dataset folder holding "
                          f"{', '.join(s + '.jsonl' for s in SPLITS)} (or at a published PRIST .json file)")
    if annotations is not None:
        raise ConfigError("--annotations is for a published PRIST file; a dataset folder holds its masks")
    present = [s for s in SPLITS if (directory / f"{s}.jsonl").is_file()]
    if not present:
        raise ConfigError(f"no split files in {directory}; expected {', '.join(s + '.jsonl' for s in SPLITS)}")
    records = {s: list(read_records(directory / f"{s}.jsonl")) for s in present}
    return Stats(directory=str(directory), splits={s: split_stats(records[s]) for s in present},
                 total=split_stats(r for s in present for r in records[s]))


def table_rows(stats: Stats, paper: bool = False) -> tuple[list[str], list[list[str]]]:
    """Column headers and rows of the Table-2-style summary (one column per split, then "all",
    and with ``paper`` the paper's own figures)."""
    columns = {**stats.splits, "all": stats.total}
    rows = [
        ("Total Images", lambda s: f"{s.images:,}"),
        ("Total Samples", lambda s: f"{s.samples:,}"),
        ("Granularity (Coarse: Med.: Fine)",
         lambda s: ": ".join(f"{round(100 * s.granularity[g])}%" for g in GRANULARITIES) if s.masks else "n/a"),
        ("Number of Utterances", lambda s: f"{s.utterances:,}"),
        ("Avg. / Max Utterances per Dialogue", lambda s: f"{s.mean_utterances:.2f} / {s.max_utterances}"),
        ("Avg. / Min / Max Turns", lambda s: f"{s.mean_turns:.2f} / {s.min_turns} / {s.max_turns}"),
        ("Avg. / Max Dialogue Length", lambda s: f"{s.mean_dialogue_chars:.1f} / {s.max_dialogue_chars}"),
        ("Avg. / Max Dialogue Words", lambda s: f"{s.mean_dialogue_words:.1f} / {s.max_dialogue_words}"),
        ("Messages", lambda s: f"{s.messages:,}"),
        ("Avg. Focus Length (words)", lambda s: f"{s.focus_words:.1f}"),
        ("Targets (object / part / text)", lambda s: " / ".join(str(s.kinds[k]) for k in TARGET_KINDS)),
    ]
    headers = ["Statistic", *columns] + (["paper (Table 2)"] if paper else [])
    body = [[label, *(cell(s) for s in columns.values())] + ([PAPER_TABLE2.get(label, "–")] if paper else [])
            for label, cell in rows]
    return headers, body


def definitions_text() -> str:
    """The label definitions, one per line, for printing under the table."""
    return "\n".join(f"{name}: {meaning}" for name, meaning in DEFINITIONS.items())
