"""Segmentation-metric throughput on 1024x1024 masks: the COCO RLE path against the dense path.

    python recipes/bench_metrics.py [--samples 256] [--repeats 5] [--size 1024] [--seed 0]

Targets are unions of a few random ellipses (so their RLEs are as long as real annotations');
predictions are the targets shifted by a few pixels plus a spurious blob, and one in eight is
missing (no [SEG]). The same pairs are scored three ways by :class:`SegmentationMeter`:

* ``rle``: ``add_rle`` on COCO RLE dicts (pycocotools area / merge on the runs, no decoding);
* ``dense``: ``add_arrays`` on bool (H, W) arrays already in memory;
* ``decode+dense``: the RLEs decoded with pycocotools, then ``add_arrays``: what the dense
  path costs when predictions and annotations are stored as RLE (the usual case).

Figures are samples per second (best of ``--repeats``, one process); the ratios are what to read.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from pycocotools import mask as coco_mask

from pixelagent.eval.segmentation import SegmentationMeter
from pixelagent.arguments import non_negative_int, positive_int


def ellipses(rng: np.random.Generator, size: int, count: int) -> np.ndarray:
    """A union of ``count`` random axis-aligned ellipses, (size, size) bool."""
    rows, cols = np.ogrid[:size, :size]
    out = np.zeros((size, size), dtype=bool)
    for _ in range(count):
        cy, cx = rng.uniform(0.1 * size, 0.9 * size, 2)
        ry, rx = rng.uniform(0.01 * size, 0.2 * size, 2)
        out |= ((rows - cy) / ry) ** 2 + ((cols - cx) / rx) ** 2 <= 1
    return out


def make_pairs(samples: int, size: int, seed: int) -> list[tuple[np.ndarray | None, np.ndarray]]:
    """(prediction or None, target) pairs: predictions overlap their targets only partly."""
    rng = np.random.default_rng(seed)
    pairs = []
    for i in range(samples):
        target = ellipses(rng, size, int(rng.integers(1, 5)))
        shift = rng.integers(-12, 13, 2)
        pred = np.roll(target, tuple(shift), axis=(0, 1)) | ellipses(rng, size, 1)
        pairs.append((None if i % 8 == 7 else pred, target))
    return pairs


def encode(array: np.ndarray | None) -> dict | None:
    return None if array is None else coco_mask.encode(np.asfortranarray(array, dtype=np.uint8))


def decode(rle: dict | None) -> np.ndarray | None:
    return None if rle is None else coco_mask.decode(rle).astype(bool)


def run(pairs: list, add: str, convert=None) -> tuple[float, SegmentationMeter]:
    """Seconds to score all ``pairs`` with ``meter.<add>`` (after ``convert`` on each mask)."""
    meter = SegmentationMeter()
    method = getattr(meter, add)
    start = time.perf_counter()
    for pred, target in pairs:
        if convert is None:
            method(pred, target)
        else:
            method(convert(pred), convert(target))
    return time.perf_counter() - start, meter


def best_rate(pairs: list, repeats: int, add: str, convert=None) -> tuple[float, SegmentationMeter]:
    """Best samples/s over ``repeats`` runs, and the meter of the last run."""
    best = float("inf")
    for _ in range(repeats):
        seconds, meter = run(pairs, add, convert)
        best = min(best, seconds)
    return len(pairs) / best, meter


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pixelagent recipe bench-metrics", description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=positive_int, default=256)
    parser.add_argument("--repeats", type=positive_int, default=5)
    parser.add_argument("--size", type=positive_int, default=1024)
    parser.add_argument("--seed", type=non_negative_int, default=0)
    args = parser.parse_args(argv)

    dense = make_pairs(args.samples, args.size, args.seed)
    coded = [(encode(pred), encode(target)) for pred, target in dense]
    rle_bytes = np.mean([len(target["counts"]) for _, target in coded])
    area = np.mean([target.mean() for _, target in dense])
    print(f"{args.samples} pairs of {args.size}x{args.size} masks; mean target area {100 * area:.1f}% "
          f"of the image, mean compressed RLE {rle_bytes:.0f} bytes")

    rle_rate, rle_meter = best_rate(coded, args.repeats, "add_rle")
    dense_rate, dense_meter = best_rate(dense, args.repeats, "add_arrays")
    decode_rate, decode_meter = best_rate(coded, args.repeats, "add_arrays", decode)
    if not rle_meter.result() == dense_meter.result() == decode_meter.result():
        raise SystemExit("the RLE and dense paths disagree: this is a bug")

    print(f"rle           {rle_rate:10.0f} samples/s")
    print(f"dense         {dense_rate:10.0f} samples/s")
    print(f"decode+dense  {decode_rate:10.0f} samples/s")
    print(f"rle / dense = {rle_rate / dense_rate:.1f}x   rle / (decode+dense) = {rle_rate / decode_rate:.1f}x")
    print(f"(all three agree: cIoU {100 * rle_meter.result().overall.ciou:.2f}%)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
