"""The evaluation harness: metric computation only (running the models is the recipes' job).

* :mod:`pixelagent.eval.segmentation`: cIoU, gIoU, pixel precision / recall / F1, overall and
  by target granularity, plus the no-target rate (:class:`SegmentationMeter`).
* :mod:`pixelagent.eval.response`: BLEU-4, Dist-1/2, ROUGE-L, METEOR, BERTScore (and CIDEr) of
  generated answers, offline (:func:`response_metrics`; libraries from the ``eval`` extra).
* :mod:`pixelagent.eval.report`: the paper's Table 3 as Markdown, a bar plot by granularity.
* :mod:`pixelagent.eval.judge`: the LLM judge of reasoning quality (Figure 8) and the Win Rate;
  :mod:`pixelagent.eval.judge_run` judges a split into a file, resumably.
* :mod:`pixelagent.eval.protocol`: the ``paper`` / ``pixelagent`` protocols where they differ,
  and :class:`~pixelagent.eval.protocol.SegmentationQuery`, the mark of a segmentation query.

Importing this package imports neither torch nor any metric library.
"""

from pixelagent.eval.report import plot_by_granularity, table3_markdown, table3_row
from pixelagent.eval.response import (
    DEFAULT_METRICS,
    METRICS,
    MissingDependencyError,
    ResponseScores,
    distinct_n,
    response_metrics,
)
from pixelagent.eval.segmentation import SegmentationMeter, SegmentationScores, SplitScores

__all__ = [
    "DEFAULT_METRICS",
    "METRICS",
    "MissingDependencyError",
    "ResponseScores",
    "SegmentationMeter",
    "SegmentationScores",
    "SplitScores",
    "distinct_n",
    "plot_by_granularity",
    "response_metrics",
    "table3_markdown",
    "table3_row",
]
