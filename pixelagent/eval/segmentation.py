"""Segmentation metrics over a split: cIoU, gIoU and pixel-wise precision / recall / F1.

Definitions (DESIGN §3; PRIST paper §5.1 and Appendix C.4.1). Each sample is one
``(prediction, target)`` pair of binary masks of the same ``(H, W)``; a missing prediction
(``None``, "no [SEG] produced") counts as an empty mask. Per sample, in pixels::

    TP = |pred & target|    FP = |pred & ~target|    FN = |~pred & target|
    union = TP + FP + FN

Split-level ("accumulated") scores sum the pixel counts over all samples first:

* **cIoU** = Σ TP / Σ union (foreground only; big masks weigh more).
* **precision** = Σ TP / Σ (TP + FP), **recall** = Σ TP / Σ (TP + FN),
  **f1** = 2 P R / (P + R) of those two.

Per-sample scores are averaged over the samples (every sample weighs the same):

* **gIoU** = mean of TP / union.
* **mean_precision**, **mean_recall**, **mean_f1** = means of the per-sample P, R and
  F1 = 2 P R / (P + R) (= Dice = 2 TP / (2 TP + FP + FN)).

The 0/0 convention, for per-sample and accumulated ratios alike: when the prediction and the
target are both empty (nothing to find, nothing claimed) the ratio is **1.0**, the exact
agreement that gIoU's empty/empty = 1 rule encodes; any other 0/0 (an empty prediction's
precision against a non-empty target, a non-empty prediction's recall against an empty
target) is **0.0**, so abstaining or hallucinating is never rewarded. F1 with P + R = 0 is 0.

All scores are fractions in [0, 1] (multiply by 100 for the paper's tables). Each is given
overall and by the granularity of the TARGET mask (PRIST Table 2 rule at that image's size,
:func:`pixelagent.mask.classify_granularity`); a sample whose target is empty has no
granularity and is counted under ``"none"`` (and overall), never under coarse/medium/fine.

Two input paths give identical numbers: COCO RLE dicts are scored with ``pycocotools.mask``
without decoding (the fast path for predictions and annotations stored as RLE), dense
arrays / :class:`~pixelagent.mask.Mask` objects with numpy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

import numpy as np
from pycocotools import mask as coco_mask
from pydantic import BaseModel, ConfigDict

from pixelagent.errors import MaskError
from pixelagent.mask import Granularity, Mask, classify_granularity

__all__ = ["NO_GRANULARITY", "SegmentationMeter", "SegmentationScores", "SplitScores"]

NO_GRANULARITY = "none"
"""Bucket of the samples whose target mask is empty (they have no granularity)."""

BUCKETS: tuple[str, ...] = (*(g.value for g in Granularity), NO_GRANULARITY)

MaskLike = Union[Mask, dict, np.ndarray]


class SplitScores(BaseModel):
    """Scores of one set of samples (the whole split or one granularity), fractions in [0, 1].

    Every score is None when ``count == 0`` (there is nothing to average).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    count: int
    ciou: Optional[float] = None
    giou: Optional[float] = None
    precision: Optional[float] = None
    recall: Optional[float] = None
    f1: Optional[float] = None
    mean_precision: Optional[float] = None
    mean_recall: Optional[float] = None
    mean_f1: Optional[float] = None
    no_target_rate: Optional[float] = None


class SegmentationScores(BaseModel):
    """``overall`` scores, the same by target granularity, and the split's no-target rate.

    ``by_granularity`` always has the keys "coarse", "medium", "fine" and "none" (empty
    targets). ``no_target_rate`` is the fraction of samples whose prediction was None.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    overall: SplitScores
    by_granularity: dict[str, SplitScores]
    no_target_rate: Optional[float] = None


def _ratio(numerator: int, denominator: int, both_empty: bool) -> float:
    """``numerator / denominator`` with the module's 0/0 rule (1.0 if both masks empty, else 0.0)."""
    if denominator == 0:
        return 1.0 if both_empty else 0.0
    return numerator / denominator


def _f1(precision: float, recall: float) -> float:
    total = precision + recall
    return 0.0 if total == 0 else 2 * precision * recall / total


@dataclass
class _Tally:
    """Running sums for one bucket: pixel counts (Python ints, so they never overflow) and
    per-sample score sums."""

    count: int = 0
    no_target: int = 0
    tp: int = 0
    pred_area: int = 0
    target_area: int = 0
    iou_sum: float = 0.0
    precision_sum: float = 0.0
    recall_sum: float = 0.0
    f1_sum: float = 0.0

    def add(self, tp: int, pred_area: int, target_area: int, no_target: bool) -> None:
        both_empty = pred_area == 0 and target_area == 0
        precision = _ratio(tp, pred_area, both_empty)
        recall = _ratio(tp, target_area, both_empty)
        self.count += 1
        self.no_target += int(no_target)
        self.tp += tp
        self.pred_area += pred_area
        self.target_area += target_area
        self.iou_sum += _ratio(tp, pred_area + target_area - tp, both_empty)
        self.precision_sum += precision
        self.recall_sum += recall
        self.f1_sum += _f1(precision, recall)

    def scores(self) -> SplitScores:
        if self.count == 0:
            return SplitScores(count=0)
        n, both_empty = self.count, self.pred_area == 0 and self.target_area == 0
        precision = _ratio(self.tp, self.pred_area, both_empty)
        recall = _ratio(self.tp, self.target_area, both_empty)
        return SplitScores(
            count=n,
            ciou=_ratio(self.tp, self.pred_area + self.target_area - self.tp, both_empty),
            giou=self.iou_sum / n,
            precision=precision,
            recall=recall,
            f1=_f1(precision, recall),
            mean_precision=self.precision_sum / n,
            mean_recall=self.recall_sum / n,
            mean_f1=self.f1_sum / n,
            no_target_rate=self.no_target / n,
        )


class SegmentationMeter:
    """Accumulates (prediction, target) pairs of one split; :meth:`result` gives the scores.

    Example::

        meter = SegmentationMeter()
        for pred, target in pairs:           # Mask, COCO RLE dict or None (no [SEG])
            meter.add(pred, target)
        scores = meter.result()              # scores.overall.ciou, scores.by_granularity["fine"]
    """

    def __init__(self) -> None:
        self._overall = _Tally()
        self._buckets = {name: _Tally() for name in BUCKETS}

    def __len__(self) -> int:
        return self._overall.count

    def add(
        self,
        pred: MaskLike | None,
        target: MaskLike,
        granularity: Granularity | None = None,
    ) -> None:
        """Add one sample. ``pred``/``target`` are Masks, COCO RLE dicts or (H, W) arrays.

        Two RLE dicts (or None and an RLE) take the RLE path, anything else the dense one.
        ``granularity`` defaults to the target's (None for an empty target: bucket "none").
        """
        if isinstance(target, dict) and (pred is None or isinstance(pred, dict)):
            self.add_rle(pred, target, granularity)
        else:
            self.add_arrays(_dense(pred), _dense(target), granularity)

    def add_rle(self, pred: dict | None, target: dict, granularity: Granularity | None = None) -> None:
        """Add one sample given as COCO RLE dicts (compressed or uncompressed counts).

        Pixel counts come from ``pycocotools.mask.area`` and ``merge(..., intersect=True)``
        on the run lengths; nothing is decoded. The RLEs are trusted to be well-formed
        (as written by :meth:`Mask.to_rle` or pycocotools); only their sizes are checked.
        """
        target_rle = _coco_rle(target)
        target_area = int(coco_mask.area(target_rle))
        size = _rle_size(target_rle)
        if pred is None:
            tp, pred_area = 0, 0
        else:
            pred_rle = _coco_rle(pred)
            _check_sizes(_rle_size(pred_rle), size)
            pred_area = int(coco_mask.area(pred_rle))
            # Skip the merge when either side is empty: the intersection is 0 anyway.
            both = pred_area and target_area
            tp = int(coco_mask.area(coco_mask.merge([pred_rle, target_rle], intersect=True))) if both else 0
        self._record(tp, pred_area, target_area, size, granularity, pred is None)

    def add_arrays(
        self, pred: np.ndarray | None, target: np.ndarray, granularity: Granularity | None = None
    ) -> None:
        """Add one sample given as dense (H, W) arrays (bool, or 0/1 numbers); pred may be None."""
        target = _bool_array(target)
        target_area = int(np.count_nonzero(target))
        if pred is None:
            tp, pred_area = 0, 0
        else:
            pred = _bool_array(pred)
            _check_sizes(pred.shape, target.shape)
            pred_area = int(np.count_nonzero(pred))
            tp = int(np.count_nonzero(pred & target)) if pred_area and target_area else 0
        self._record(tp, pred_area, target_area, target.shape, granularity, pred is None)

    def result(self) -> SegmentationScores:
        """Scores of everything added so far (see the module docstring for the definitions)."""
        overall = self._overall.scores()
        return SegmentationScores(
            overall=overall,
            by_granularity={name: tally.scores() for name, tally in self._buckets.items()},
            no_target_rate=overall.no_target_rate,
        )

    def _record(
        self,
        tp: int,
        pred_area: int,
        target_area: int,
        size: tuple[int, int],
        granularity: Granularity | None,
        no_target: bool,
    ) -> None:
        if granularity is None and target_area:
            granularity = classify_granularity(target_area, (int(size[0]), int(size[1])))
        bucket = NO_GRANULARITY if granularity is None else Granularity(granularity).value
        self._overall.add(tp, pred_area, target_area, no_target)
        self._buckets[bucket].add(tp, pred_area, target_area, no_target)


# --------------------------------------------------------------------- input helpers


def _dense(value: MaskLike | None) -> np.ndarray | None:
    """A Mask, RLE dict or array as a bool array (RLE decoded and validated by Mask.from_rle)."""
    if value is None or isinstance(value, np.ndarray):
        return value
    if isinstance(value, Mask):
        return value.array
    if isinstance(value, dict):
        return Mask.from_rle(value).array
    raise MaskError(f"expected a Mask, a COCO RLE dict or an (H, W) array; got {type(value).__name__}")


def _bool_array(array: np.ndarray) -> np.ndarray:
    # Bool arrays go through untouched (the hot path); others get Mask's 0/1 validation.
    if isinstance(array, np.ndarray) and array.dtype == np.bool_ and array.ndim == 2 and array.size:
        return array
    return Mask(array).array


def _coco_rle(rle: dict) -> dict:
    """A pycocotools RLE object from a dict with compressed (str/bytes) or uncompressed counts."""
    if not isinstance(rle, dict) or "size" not in rle or "counts" not in rle:
        raise MaskError(f'an RLE must be a dict with "size" and "counts"; got {type(rle).__name__}')
    counts = rle["counts"]
    if isinstance(counts, (list, tuple)):
        h, w = rle["size"]
        return coco_mask.frPyObjects({"size": [h, w], "counts": list(counts)}, h, w)
    if isinstance(counts, str):
        return {"size": rle["size"], "counts": counts.encode("ascii")}
    return rle


def _rle_size(rle: dict) -> tuple[int, int]:
    return (int(rle["size"][0]), int(rle["size"][1]))


def _check_sizes(pred: tuple[int, ...], target: tuple[int, ...]) -> None:
    if tuple(pred) != tuple(target):
        raise MaskError(
            f"prediction is {pred[0]}x{pred[1]} but the target is {target[0]}x{target[1]}; "
            "resize the prediction to the target's (H, W) first (Mask.resize)"
        )
