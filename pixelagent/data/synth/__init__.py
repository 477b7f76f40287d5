"""PRIST-Synth: procedurally generated PRIST-format samples, with exact masks, needing nothing from outside.

Each image shows 2-5 objects that have parts and text (bottles with labelled words, buses with
route numbers, coins, signs, books, mugs) on a textured background; each dialogue follows the
paper's three steps (Figure 7: element list, object -> part -> text reasoning path, 2-6-turn
dialogue ending in a segmentation request answered ``[OBJ]phrase[SEG]``) and targets one
element, picked so that the coarse : medium : fine mix matches PRIST's Table 2.

    from pixelagent.data.synth import SynthConfig, synthesize, dataset_stats
    report = synthesize("data/synth", SynthConfig(n=600, size=256, seed=0))
    stats = dataset_stats("data/synth")

Lower-level pieces: ``generate_scene(rng, size) -> Scene`` (image, objects, elements with
visible masks and polygons) and ``make_samples(scene, rng, config) -> list[Sample]`` (each a
``PristRecord`` plus its reasoning path as element ids).
"""

from __future__ import annotations

from pixelagent.data.synth.catalog import KINDS, PALETTE, KindSpec
from pixelagent.data.synth.config import GRANULARITY_MIX, SynthConfig
from pixelagent.data.synth.dialogue import (
    ANSWERS,
    REQUESTS,
    SOURCE,
    Sample,
    choose_targets,
    element_list,
    make_samples,
    phrase_of,
    reasoning_path,
)
from pixelagent.data.synth.scene import Element, Scene, SceneObject, generate_scene
from pixelagent.data.synth.stats import SplitStats, Stats, dataset_stats, split_stats
from pixelagent.data.synth.writer import SynthReport, assign_splits, image_samples, synthesize

__all__ = [
    "ANSWERS",
    "GRANULARITY_MIX",
    "KINDS",
    "PALETTE",
    "REQUESTS",
    "SOURCE",
    "Element",
    "KindSpec",
    "Sample",
    "Scene",
    "SceneObject",
    "SplitStats",
    "Stats",
    "SynthConfig",
    "SynthReport",
    "assign_splits",
    "choose_targets",
    "dataset_stats",
    "element_list",
    "generate_scene",
    "image_samples",
    "make_samples",
    "phrase_of",
    "reasoning_path",
    "split_stats",
    "synthesize",
]
