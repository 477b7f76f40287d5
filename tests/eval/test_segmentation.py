"""Segmentation metrics against hand-computed values and pycocotools, on both input paths."""

from __future__ import annotations

import numpy as np
import pytest
from pycocotools import mask as coco_mask

from pixelagent.errors import MaskError
from pixelagent.eval.segmentation import SegmentationMeter
from pixelagent.mask import Granularity, Mask


def rle(array: np.ndarray) -> dict:
    """Compressed COCO RLE straight from pycocotools (bytes counts), independent of Mask."""
    return coco_mask.encode(np.asfortranarray(array, dtype=np.uint8))


def blobs(rng: np.random.Generator, size: int, count: int) -> np.ndarray:
    """A union of ``count`` random ellipses: realistic, compressible masks."""
    rows, cols = np.ogrid[:size, :size]
    out = np.zeros((size, size), dtype=bool)
    for _ in range(count):
        cy, cx = rng.uniform(0, size, 2)
        ry, rx = rng.uniform(2, size / 4, 2)
        out |= ((rows - cy) / ry) ** 2 + ((cols - cx) / rx) ** 2 <= 1
    return out


def first_pixels(area: int, shape: tuple[int, int]) -> np.ndarray:
    """A mask of exactly ``area`` pixels (the first ones in row-major order)."""
    flat = np.zeros(shape[0] * shape[1], dtype=bool)
    flat[:area] = True
    return flat.reshape(shape)


# ----------------------------------------------------------------- hand-computed example

A_TARGET = np.array([[1, 1], [0, 0]], dtype=bool)
A_PRED = np.array([[1, 0], [1, 0]], dtype=bool)  # TP 1, FP 1, FN 1: IoU 1/3, P = R = F1 = 1/2
B_TARGET = np.ones((2, 2), dtype=bool)  # prediction None: IoU 0, P 0 (0/0, target not empty), R 0
C_TARGET = np.zeros((2, 2), dtype=bool)  # empty prediction, empty target: everything 1

# On a 2x2 image s = 2/640: any non-empty mask is coarse (area > (96 s)^2 = 0.09).
EXPECTED_OVERALL = {
    "count": 3,
    "ciou": 1 / 7,  # sum TP 1 / sum union (3 + 4 + 0)
    "giou": (1 / 3 + 0 + 1) / 3,
    "precision": 1 / 2,  # sum TP 1 / sum pred 2
    "recall": 1 / 6,  # sum TP 1 / sum target 6
    "f1": 1 / 4,  # 2 (1/2)(1/6) / (1/2 + 1/6)
    "mean_precision": (1 / 2 + 0 + 1) / 3,
    "mean_recall": (1 / 2 + 0 + 1) / 3,
    "mean_f1": (1 / 2 + 0 + 1) / 3,
    "no_target_rate": 1 / 3,
}
EXPECTED_COARSE = {
    "count": 2, "ciou": 1 / 7, "giou": 1 / 6, "precision": 1 / 2, "recall": 1 / 6, "f1": 1 / 4,
    "mean_precision": 1 / 4, "mean_recall": 1 / 4, "mean_f1": 1 / 4, "no_target_rate": 1 / 2,
}
EXPECTED_NONE = {key: 1.0 for key in EXPECTED_OVERALL} | {"count": 1, "no_target_rate": 0.0}


def hand_meter(path: str) -> SegmentationMeter:
    meter = SegmentationMeter()
    if path == "rle":
        meter.add(rle(A_PRED), rle(A_TARGET))
        meter.add(None, rle(B_TARGET))
        meter.add(rle(C_TARGET), rle(C_TARGET))
    elif path == "arrays":
        meter.add_arrays(A_PRED, A_TARGET)
        meter.add_arrays(None, B_TARGET)
        meter.add_arrays(C_TARGET, C_TARGET)
    else:
        meter.add(Mask(A_PRED), Mask(A_TARGET))
        meter.add(None, Mask(B_TARGET))
        meter.add(Mask.empty((2, 2)), Mask(C_TARGET))
    return meter


@pytest.mark.parametrize("path", ["rle", "arrays", "masks"])
def test_hand_computed_example(path):
    scores = hand_meter(path).result()
    assert scores.overall.model_dump() == pytest.approx(EXPECTED_OVERALL)
    assert scores.by_granularity["coarse"].model_dump() == pytest.approx(EXPECTED_COARSE)
    assert scores.by_granularity["none"].model_dump() == pytest.approx(EXPECTED_NONE)
    assert scores.no_target_rate == pytest.approx(1 / 3)
    for name in ("fine", "medium"):
        empty = scores.by_granularity[name].model_dump()
        assert empty.pop("count") == 0 and set(empty.values()) == {None}


def test_empty_prediction_and_empty_target_score_one():
    meter = SegmentationMeter()
    meter.add(None, rle(C_TARGET))
    overall = meter.result().overall
    assert (overall.giou, overall.ciou, overall.f1, overall.mean_f1) == (1.0, 1.0, 1.0, 1.0)
    assert overall.no_target_rate == 1.0


def test_prediction_on_an_empty_target_scores_zero():
    meter = SegmentationMeter()
    meter.add_arrays(A_PRED, C_TARGET)  # 2 false positives, nothing to find
    overall = meter.result().overall
    assert overall.model_dump() == pytest.approx(
        {"count": 1, "ciou": 0.0, "giou": 0.0, "precision": 0.0, "recall": 0.0, "f1": 0.0,
         "mean_precision": 0.0, "mean_recall": 0.0, "mean_f1": 0.0, "no_target_rate": 0.0}
    )


def test_empty_meter_has_no_scores():
    scores = SegmentationMeter().result()
    assert scores.overall.count == 0 and scores.overall.ciou is None and scores.no_target_rate is None


# ----------------------------------------------------------------- pycocotools and random masks


def random_pairs(seed: int, n: int = 24, size: int = 96):
    """(pred or None, target) pairs with blobs, including empty targets and missing predictions."""
    rng = np.random.default_rng(seed)
    pairs = []
    for i in range(n):
        target = blobs(rng, size, rng.integers(1, 4)) if i % 6 else np.zeros((size, size), bool)
        pred = None if i % 7 == 3 else blobs(rng, size, rng.integers(0, 4))
        pairs.append((pred, target))
    return pairs


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_per_sample_iou_matches_pycocotools(seed):
    for pred, target in random_pairs(seed):
        if pred is None or not (pred.any() or target.any()):
            continue  # pycocotools scores empty/empty 0; our rule says 1 (tested above)
        expected = coco_mask.iou([rle(pred)], [rle(target)], [0])[0][0]
        for add in ("add_rle", "add_arrays"):
            meter = SegmentationMeter()
            getattr(meter, add)(rle(pred) if add == "add_rle" else pred, rle(target) if add == "add_rle" else target)
            assert meter.result().overall.giou == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rle_path_equals_dense_path(seed):
    dense, coded, masks = SegmentationMeter(), SegmentationMeter(), SegmentationMeter()
    for pred, target in random_pairs(seed):
        dense.add_arrays(pred, target)
        coded.add(None if pred is None else rle(pred), rle(target))
        masks.add(None if pred is None else Mask(pred), Mask(target))
    assert coded.result() == dense.result() == masks.result()
    assert len(dense) == 24


@pytest.mark.parametrize("seed", [3, 4])
def test_accumulated_scores_match_numpy(seed):
    pairs = random_pairs(seed)
    meter = SegmentationMeter()
    for pred, target in pairs:
        meter.add(None if pred is None else rle(pred), rle(target))
    preds = np.stack([np.zeros_like(t) if p is None else p for p, t in pairs])
    targets = np.stack([t for _, t in pairs])
    tp = (preds & targets).sum()
    overall = meter.result().overall
    assert overall.ciou == pytest.approx(tp / (preds | targets).sum())
    assert overall.precision == pytest.approx(tp / preds.sum())
    assert overall.recall == pytest.approx(tp / targets.sum())
    assert overall.no_target_rate == pytest.approx(sum(p is None for p, _ in pairs) / len(pairs))


def test_rle_counts_as_str_list_or_bytes_agree():
    rng = np.random.default_rng(5)
    pred, target = blobs(rng, 64, 2), blobs(rng, 64, 2)
    as_bytes = SegmentationMeter()
    as_bytes.add(rle(pred), rle(target))
    as_str = SegmentationMeter()
    as_str.add(Mask(pred).to_rle(), Mask(target).to_rle())
    as_list = SegmentationMeter()
    as_list.add(uncompressed(pred), uncompressed(target))
    assert as_bytes.result() == as_str.result() == as_list.result()


def uncompressed(array: np.ndarray) -> dict:
    """COCO uncompressed RLE: column-major run lengths starting with a run of zeros."""
    flat = array.T.ravel().astype(np.int8)
    edges = np.flatnonzero(np.diff(np.concatenate(([0], flat, [1 - flat[-1]]))))
    return {"size": list(array.shape), "counts": np.diff(np.concatenate(([0], edges))).tolist()}


# ----------------------------------------------------------------- granularity buckets


@pytest.mark.parametrize(
    ("shape", "area", "expected"),
    [
        # 1024 px: s = 1.6, fine < 51.2^2 = 2621.44 <= medium <= 153.6^2 = 23592.96 < coarse
        ((1024, 1024), 2621, "fine"),
        ((1024, 1024), 2622, "medium"),
        ((1024, 1024), 23592, "medium"),
        ((1024, 1024), 23593, "coarse"),
        # 480x640: s = 1, COCO's own 32^2 / 96^2
        ((480, 640), 1023, "fine"),
        ((480, 640), 1024, "medium"),
        ((480, 640), 9216, "medium"),
        ((480, 640), 9217, "coarse"),
        ((480, 640), 0, "none"),
    ],
)
def test_granularity_bucket_boundaries(shape, area, expected):
    target = first_pixels(area, shape)
    for add, value in (("add_rle", rle(target)), ("add_arrays", target)):
        meter = SegmentationMeter()
        getattr(meter, add)(None, value)
        counts = {name: split.count for name, split in meter.result().by_granularity.items()}
        assert counts == {name: int(name == expected) for name in ("coarse", "medium", "fine", "none")}


def test_explicit_granularity_overrides_the_targets():
    meter = SegmentationMeter()
    meter.add(rle(A_PRED), rle(A_TARGET), granularity=Granularity.FINE)
    by = meter.result().by_granularity
    assert by["fine"].count == 1 and by["coarse"].count == 0


# ----------------------------------------------------------------- errors


def test_shape_mismatch_is_a_mask_error():
    with pytest.raises(MaskError, match="resize"):
        SegmentationMeter().add_arrays(np.zeros((2, 3), bool), np.zeros((2, 2), bool))
    with pytest.raises(MaskError, match="resize"):
        SegmentationMeter().add_rle(rle(np.zeros((2, 3), bool)), rle(np.zeros((2, 2), bool)))


def test_non_binary_arrays_are_rejected():
    with pytest.raises(MaskError):
        SegmentationMeter().add_arrays(np.full((2, 2), 0.5), np.zeros((2, 2), bool))
    with pytest.raises(MaskError):
        SegmentationMeter().add_rle({"counts": "x"}, rle(np.zeros((2, 2), bool)))


# ----------------------------------------------------------------- report: plot by granularity
# (pixelagent.eval.report; kept here because its input is SegmentationScores)


def test_plot_by_granularity_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    import PIL.Image

    from pixelagent.eval.report import plot_by_granularity

    meter = SegmentationMeter()
    for pred, target in random_pairs(7, size=1024 // 8):
        meter.add_arrays(pred, target)
    path = plot_by_granularity(meter.result(), tmp_path / "granularity.png")
    with PIL.Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size == (640, 400)  # 6.4 x 4.0 inches at 100 dpi
        assert np.unique(np.asarray(image.convert("L"))).size > 2  # bars and text were drawn
