"""Writing a PRIST-Synth dataset: ``DIR/{train,val,test}.jsonl`` + ``DIR/images/*.png``.

Image ``i`` is drawn from its own generator, ``default_rng([seed, i])``, so any image can be
regenerated alone and the output does not depend on the order of work. Splits are by image.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image
from pydantic import BaseModel

from pixelagent.data.records import SPLITS, write_records
from pixelagent.data.synth.config import SynthConfig
from pixelagent.data.synth.dialogue import Sample, draw_classes, make_samples
from pixelagent.data.synth.scene import Scene, generate_scene
from pixelagent.errors import ConfigError

MANIFEST = "synth.json"
_STRICT_SCENES = 20  # scenes tried for an image's drawn granularities before relaxing them
Progress = Callable[[int, int], None]


class SynthReport(BaseModel):
    """What :func:`synthesize` wrote: counts per split (samples and images) and per target class."""

    out_dir: str
    images: int
    samples: int
    split_samples: dict[str, int]
    split_images: dict[str, int]
    granularity: dict[str, int]
    kinds: dict[str, int]
    seconds: float


def image_id(seed: int, index: int) -> str:
    """``synth-{seed}-{index:06d}``: the image's file stem and the prefix of its record ids."""
    return f"synth-{seed}-{index:06d}"


def split_counts(total: int, shares: tuple[float, ...]) -> list[int]:
    """``total`` items shared out by ``shares`` (largest remainder, so the counts sum to ``total``)."""
    exact = np.asarray(shares, dtype=float) * total
    counts = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - counts), kind="stable")[: total - counts.sum()]:
        counts[i] += 1
    return [int(c) for c in counts]


def assign_splits(config: SynthConfig) -> list[str]:
    """The split of every image (index -> "train" / "val" / "test"), shuffled by the seed."""
    labels = np.repeat(np.array(SPLITS), split_counts(config.images, config.splits))
    order = np.random.default_rng([config.seed, 1]).permutation(config.images)
    splits = [""] * config.images
    for position, index in enumerate(order):
        splits[int(index)] = str(labels[position])
    return splits


def image_samples(config: SynthConfig, index: int, split: str | None = None) -> tuple[Scene, list[Sample]]:
    """Image ``index`` of a run and its dialogues (``samples_per_image``, fewer for the last image).

    The targets' granularities are drawn first; a scene that lacks elements of those classes
    is replaced by the next one from the same generator, so that scarce classes are not
    quietly traded for common ones (after ``_STRICT_SCENES`` scenes, any classes will do).
    """
    rng = np.random.default_rng([config.seed, 0, index])
    want = min(config.samples_per_image, config.n - index * config.samples_per_image)
    classes = draw_classes(rng, want, config.granularity_mix)
    stem = image_id(config.seed, index)
    for attempt in itertools.count():
        scene = generate_scene(rng, config.size, config.min_objects, config.max_objects)
        samples = make_samples(scene, rng, config, image_id=stem, image_path=f"images/{stem}.png",
                               count=want, split=split, classes=classes if attempt < _STRICT_SCENES else None)
        if len(samples) == want:
            return scene, samples
    raise AssertionError("unreachable")


def synthesize(out_dir: str | os.PathLike, config: SynthConfig | None = None,
               progress: Progress | None = None, overwrite: bool = False) -> SynthReport:
    """Generate ``config.n`` samples into ``out_dir``; ``progress(done, total)`` after each image.

    Refuses a non-empty ``out_dir`` unless ``overwrite`` (which then replaces only the files a
    run writes: the split files, the manifest and ``images/synth-*.png``).
    """
    config = config or SynthConfig()
    out, started = Path(out_dir), time.perf_counter()
    _prepare(out, overwrite)
    splits = assign_splits(config)
    for split in SPLITS:  # every split file exists, empty or not, so loaders find all three
        write_records(out / f"{split}.jsonl", [])
    records = []  # (split, the record's targets): one per sample, one target per [SEG]
    for index, split in enumerate(splits):
        records.extend((split, s.record.targets) for s in _write_image(out, config, index, split))
        if progress is not None:
            progress(index + 1, config.images)
    (out / MANIFEST).write_text(json.dumps(
        {"generator": "prist-synth", "config": config.model_dump(mode="json")}, indent=2) + "\n")
    return SynthReport(
        out_dir=str(out), images=config.images, samples=len(records),
        split_samples={s: sum(split == s for split, _ in records) for s in SPLITS},
        split_images={s: splits.count(s) for s in SPLITS},
        granularity=dict(sorted(Counter(t.granularity.value for _, ts in records for t in ts).items())),
        kinds=dict(sorted(Counter(t.kind for _, ts in records for t in ts).items())),
        seconds=round(time.perf_counter() - started, 3))


def _write_image(out: Path, config: SynthConfig, index: int, split: str) -> list[Sample]:
    """Generate image ``index``, save its PNG and append its records to its split's file."""
    scene, samples = image_samples(config, index, split)
    # zlib level 1: the grain makes higher levels 3x slower without making files smaller.
    Image.fromarray(scene.image).save(out / "images" / f"{image_id(config.seed, index)}.png", compress_level=1)
    write_records(out / f"{split}.jsonl", (s.record for s in samples), append=True)
    return samples


def _prepare(out: Path, overwrite: bool) -> None:
    """Make ``out`` (and ``out/images``), refusing to mix a new run into an old directory."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out} exists and is not a directory; choose a directory for --out")
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise ConfigError(f"{out} is not empty; choose a new or empty directory, or pass "
                              f"--overwrite (overwrite=True) to replace the synth files in it")
        for stale in [*(out / f"{s}.jsonl" for s in SPLITS), out / MANIFEST, *out.glob("images/synth-*.png")]:
            stale.unlink(missing_ok=True)
    (out / "images").mkdir(parents=True, exist_ok=True)
