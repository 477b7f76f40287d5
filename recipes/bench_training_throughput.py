"""Training throughput (samples/s) with and without the frozen-feature cache, in one run.

    python recipes/bench_training_throughput.py [--preset miras-tiny] [--size 256] [--images 16] [--steps 12]

Trains ``--steps`` optimiser steps over the same few PRIST-Synth images three ways: without the
cache, with a cold cache (the first epoch fills it), and with a warm cache (later epochs, the
case that matters: the vision encoders and SAM's image encoder are skipped). Prints samples/s
and the ratio warm / no cache. Optionally ``--sam-size vit_b`` swaps in a real-size SAM image
encoder with random weights, where the encoder dominates the step.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from pixelagent.data.records import load_split
from pixelagent.data.synth import SynthConfig, synthesize
from pixelagent.images import load_image
from pixelagent.nn.model import SegmentationModel, SegSample
from pixelagent.registry import get_registry
from pixelagent.arguments import positive_int


def samples(directory, size: int, count: int) -> list[SegSample]:
    synthesize(directory, SynthConfig(n=count, size=size, seed=0, samples_per_image=1, splits=(1.0, 0.0, 0.0)))
    return [SegSample(load_image(f"{directory}/{r.image}"), r.turns,
                      __import__("numpy").stack([t.mask.array for t in r.targets]))
            for r in load_split(directory, "train")]


def throughput(model: SegmentationModel, data: list[SegSample], steps: int, batch: int) -> float:
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=1e-4)
    model.train()
    start = time.perf_counter()
    for step in range(steps):
        chunk = [data[(step * batch + i) % len(data)] for i in range(batch)]
        loss = model(chunk).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return steps * batch / (time.perf_counter() - start)


def build(preset_name: str, sam_size: str | None) -> SegmentationModel:
    registry = get_registry()
    overrides = {"device": "cpu"}
    if sam_size:
        overrides["mask_decoder"] = {"settings": {"size": sam_size, "random_init": True}}
    preset = registry.preset(preset_name).preset.with_overrides(**overrides)
    return SegmentationModel(registry.build(preset), preset)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="pixelagent recipe bench-training-throughput", description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="miras-tiny")
    parser.add_argument("--size", type=positive_int, default=256)
    parser.add_argument("--images", type=positive_int, default=16)
    parser.add_argument("--batch", type=positive_int, default=4)
    parser.add_argument("--steps", type=positive_int, default=12, help="steps per measurement (a multiple of images/batch)")
    parser.add_argument("--sam-size", choices=["vit_b", "vit_l", "vit_h"], default=None)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        data = samples(f"{tmp}/data", args.size, args.images)
        plain = throughput(build(args.preset, args.sam_size), data, args.steps, args.batch)
        model = build(args.preset, args.sam_size)
        model.use_feature_cache(f"{tmp}/cache")
        cold = throughput(model, data, args.images // args.batch, args.batch)
        warm = throughput(model, data, args.steps, args.batch)
    label = args.preset + (f" with SAM {args.sam_size}" if args.sam_size else "")
    print(f"{label}, {args.size}px images, batch {args.batch}: samples/s")
    print(f"  no cache   {plain:8.2f}")
    print(f"  cold cache {cold:8.2f}  (first epoch, filling it)")
    print(f"  warm cache {warm:8.2f}  (later epochs)   warm / no cache = {warm / plain:.2f}x")


if __name__ == "__main__":
    main()
