"""Rendering of evaluation results: the PRIST paper's Table 3 in Markdown, a granularity plot."""

from __future__ import annotations

import os
from pathlib import Path

from pixelagent.eval.response import ResponseScores, require
from pixelagent.eval.segmentation import NO_GRANULARITY, SegmentationScores

__all__ = ["TABLE3_COLUMNS", "plot_by_granularity", "table3_markdown", "table3_row"]

TABLE3_COLUMNS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("cIoU", ("ciou",)),
    ("Prec.", ("precision",)),
    ("Recall", ("recall",)),
    ("F1", ("f1",)),
    ("BLEU-4", ("bleu4",)),
    ("Dist-1/2", ("dist1", "dist2")),
    ("ROU_L.", ("rouge_l",)),
    ("MET.", ("meteor",)),
    ("BERTS.", ("bertscore",)),
)
"""Table 3's columns: header and the row keys (percentages) each one shows."""

_MISSING = "–"


def table3_row(segmentation: SegmentationScores | None = None, response: ResponseScores | None = None) -> dict:
    """One Table 3 row in percent: the split's accumulated cIoU / precision / recall / F1
    (fractions x 100) and the response metrics (already percent). Absent parts are left out."""
    row: dict[str, float | None] = {}
    if segmentation is not None:
        overall = segmentation.overall
        for key in ("ciou", "precision", "recall", "f1"):
            value = getattr(overall, key)
            row[key] = None if value is None else 100.0 * value
    if response is not None:
        row.update(response.model_dump(include={"bleu4", "dist1", "dist2", "rouge_l", "meteor", "bertscore"}))
    return row


def table3_markdown(rows: dict[str, dict], decimals: int = 2) -> str:
    """A Markdown table laid out like the paper's Table 3, one line per model.

    ``rows`` maps a model name to its values in PERCENT keyed as in :data:`TABLE3_COLUMNS`
    (``ciou``, ``precision``, ``recall``, ``f1``, ``bleu4``, ``dist1``, ``dist2``, ``rouge_l``,
    ``meteor``, ``bertscore``; e.g. from :func:`table3_row`). Values print with ``decimals``
    places, Dist as "dist1 / dist2"; a missing or None value prints as "–"; other keys are
    ignored.
    """
    headers = ["Model", *(header for header, _ in TABLE3_COLUMNS)]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join([" --- "] + [" ---: "] * len(TABLE3_COLUMNS)) + "|"]
    for name, values in rows.items():
        cells = [" / ".join(_cell(values.get(key), decimals) for key in keys) for _, keys in TABLE3_COLUMNS]
        lines.append("| " + " | ".join([_escape(str(name)), *cells]) + " |")
    return "\n".join(lines) + "\n"


def _cell(value: float | None, decimals: int) -> str:
    return _MISSING if value is None else f"{value:.{decimals}f}"


def _escape(text: str) -> str:
    # A "|" inside a model name would end the cell.
    return text.replace("|", "\\|")


def plot_by_granularity(scores: SegmentationScores, path: str | os.PathLike, title: str | None = None) -> Path:
    """Save a PNG bar plot of cIoU and (accumulated) F1, in percent, for fine / medium / coarse.

    The "none" bucket (empty targets) is drawn too when it has samples; a bucket without
    samples gets empty bars labelled "n/a". Each tick shows the bucket's sample count.
    Returns the path written. Needs matplotlib (rendered with Agg; pyplot is not touched).
    """
    require("matplotlib", "matplotlib")
    from matplotlib.figure import Figure  # a bare Figure renders with Agg and leaves pyplot alone

    names = ["fine", "medium", "coarse"] + ([NO_GRANULARITY] if scores.by_granularity[NO_GRANULARITY].count else [])
    buckets = [scores.by_granularity[name] for name in names]
    figure = Figure(figsize=(6.4, 4.0), dpi=100)
    axes = figure.subplots()
    width = 0.38
    for offset, (label, key) in zip((-width / 2, width / 2), (("cIoU", "ciou"), ("F1", "f1"))):
        heights = [100.0 * (getattr(b, key) or 0.0) for b in buckets]
        bars = axes.bar([i + offset for i in range(len(names))], heights, width, label=label)
        axes.bar_label(bars, labels=[_bar_label(b, key) for b in buckets], fontsize=8, padding=2)
    axes.set_xticks(range(len(names)), [f"{name}\n(n={b.count})" for name, b in zip(names, buckets)])
    axes.set_ylabel("%")
    axes.set_ylim(0, 105)
    axes.set_title(title or "Segmentation by target granularity")
    axes.legend()
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, format="png")
    return path


def _bar_label(bucket: object, key: str) -> str:
    value = getattr(bucket, key)
    return "n/a" if value is None else f"{100.0 * value:.1f}"
