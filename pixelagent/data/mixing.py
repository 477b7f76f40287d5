"""Mixing several training sources at fixed ratios, deterministically and resumably.

The paper mixes stage 1 as semantic-seg : referring-seg : VQA : caption = 9:6:2:2 and stage 2
as PRIST : VQA = 4:1 (Appendix C.2). :class:`MixedSampler` turns such ratios into an infinite
sequence of draws ``(source, index)``:

- Steps come in blocks of ``sum(ratios)`` draws (the ratios reduced to small integers, 9:6:2:2
  → 19), each holding every source exactly its ratio's number of times, in an order shuffled
  by ``(seed, block)``. The proportions are exact over every block, not just on average.
- Each source walks through a fresh permutation of its indices per pass (epoch), seeded by
  ``(seed, source, epoch)``, so every example is seen once per epoch of its source.
- :meth:`MixedSampler.draw` is a pure function of the step: how many times a source was drawn
  before a step is arithmetic (full blocks + the prefix of the current one), so nothing is
  replayed. Resuming is "start at the saved step"; sharding over ``world_size`` ranks is
  ``steps rank, rank + world_size, ...`` (:meth:`MixedSampler.draws`).

Shuffles use NumPy's ``default_rng`` (PCG64) seeded from BLAKE2b of the key, so results do not
depend on Python's salted ``hash`` or the process; an exact resume assumes the same NumPy.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterator, Mapping, Sequence
from fractions import Fraction
from functools import lru_cache, reduce
from typing import Any

import numpy as np

from pixelagent.data.examples import Dataset, TrainingExample, stable_int
from pixelagent.errors import ConfigError, InputError

__all__ = ["MAX_BLOCK", "MixedDataset", "MixedSampler", "integer_ratios", "ratios_from_config"]

#: Longest block allowed; ratios needing more (0.3331:0.6669, say) should be rounded.
MAX_BLOCK = 10_000


class MixedSampler:
    """An infinite, deterministic sequence of ``(source, index)`` draws at exact ratios.

    Args:
        sizes: ``{source: number of examples}``; every size must be at least 1.
        ratios: ``{source: weight}`` for exactly the sources of ``sizes`` (ints or floats > 0,
            e.g. ``{"semantic": 9, "refer": 6, "vqa": 2, "caption": 2}``).
        seed: any int; different seeds give different block orders and permutations.
    """

    def __init__(self, sizes: Mapping[str, int], ratios: Mapping[str, float | int], seed: int = 0) -> None:
        _validate(sizes, ratios)
        self.sizes = {name: int(sizes[name]) for name in sorted(sizes)}
        self.counts = integer_ratios(ratios)
        self.seed = int(seed)
        self.block_size = sum(self.counts.values())
        # Caches only: draw() gives the same answer with or without them.
        self._block = lru_cache(maxsize=8)(self._make_block)
        self._permutation = lru_cache(maxsize=2 * len(self.sizes) + 2)(self._make_permutation)

    def draw(self, step: int) -> tuple[str, int]:
        """The source and the example index drawn at ``step`` (0, 1, 2, ...)."""
        step = _step(step)
        block, offset = divmod(step, self.block_size)
        order = self._block(block)
        source = order[offset]
        drawn_before = block * self.counts[source] + order[:offset].count(source)
        epoch, position = divmod(drawn_before, self.sizes[source])
        return source, int(self._permutation(source, epoch)[position])

    def consumed(self, step: int) -> dict[str, int]:
        """How many draws each source had in steps ``0 .. step - 1`` (its epoch = that // size)."""
        block, offset = divmod(_step(step), self.block_size)
        prefix = self._block(block)[:offset]
        return {name: block * count + prefix.count(name) for name, count in self.counts.items()}

    def draws(self, start: int = 0, stop: int | None = None, *, rank: int = 0,
              world_size: int = 1) -> Iterator[tuple[str, int]]:
        """Draws of steps ``start + rank, start + rank + world_size, ...`` up to ``stop`` (or forever)."""
        if not 0 <= rank < world_size:
            raise ConfigError(f"rank {rank} is outside 0..{world_size - 1}")
        step = _step(start) + rank
        while stop is None or step < stop:
            yield self.draw(step)
            step += world_size

    def _make_block(self, block: int) -> tuple[str, ...]:
        base = [name for name, count in self.counts.items() for _ in range(count)]
        order = np.random.default_rng(stable_int("block", self.seed, block)).permutation(len(base))
        return tuple(base[k] for k in order)

    def _make_permutation(self, source: str, epoch: int) -> np.ndarray:
        return np.random.default_rng(stable_int("epoch", self.seed, source, epoch)).permutation(self.sizes[source])


class MixedDataset:
    """Datasets mixed by a :class:`MixedSampler`: ``mixed[step]`` is the example drawn at ``step``."""

    def __init__(self, datasets: Mapping[str, Dataset], ratios: Mapping[str, float | int], seed: int = 0,
                 name: str = "mixed") -> None:
        self.name = name
        self.datasets = dict(datasets)
        self.sampler = MixedSampler({key: len(d) for key, d in self.datasets.items()}, ratios, seed)

    def __getitem__(self, step: int) -> TrainingExample:
        source, index = self.sampler.draw(step)
        return self.datasets[source][index]


def _step(step: Any) -> int:
    step = operator.index(step)
    if step < 0:
        raise InputError(f"steps count from 0, got {step}")
    return step


def _validate(sizes: Mapping[str, int], ratios: Mapping[str, Any]) -> None:
    """ConfigError listing every problem: missing or extra ratios, empty sources, bad weights."""
    problems = [] if sizes else ["no sources to mix"]
    problems += [f"source {name!r} has no ratio" for name in sizes if name not in ratios]
    problems += [f"ratio given for {name!r}, which is not a source" for name in ratios if name not in sizes]
    for name, size in sizes.items():
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
            problems.append(f"source {name!r} has {size!r} examples; a mixed source needs at least 1")
    for name, weight in ratios.items():
        if isinstance(weight, bool) or not isinstance(weight, (int, float, np.number)) \
                or not math.isfinite(weight) or weight <= 0:
            problems.append(f"ratio of {name!r} must be a positive number, got {weight!r}")
    if problems:
        raise ConfigError("cannot mix: " + "; ".join(problems))


def integer_ratios(ratios: Mapping[str, float | int]) -> dict[str, int]:
    """The ratios as the smallest integers in the same proportion (9:6:3:3 → 3:2:1:1), sorted by name.

    Floats are read as fractions with denominators up to 1000 (0.45:0.3:0.1 → 9:6:2).
    """
    fractions = {name: Fraction(ratios[name]).limit_denominator(1000) for name in sorted(ratios)}
    scale = reduce(math.lcm, (f.denominator for f in fractions.values()), 1)
    numbers = {name: int(f * scale) for name, f in fractions.items()}
    divisor = reduce(math.gcd, numbers.values())
    counts = {name: n // divisor for name, n in numbers.items()}
    if 0 in counts.values():
        raise ConfigError(f"ratios {dict(ratios)}: a weight below 1/1000 of the others rounds to 0")
    if sum(counts.values()) > MAX_BLOCK:
        raise ConfigError(f"ratios {dict(ratios)} need blocks of {sum(counts.values())} draws "
                          f"(more than {MAX_BLOCK}); round them to simpler numbers")
    return counts


def ratios_from_config(value: str | Mapping[str, Any] | Sequence[Any],
                       names: Sequence[str] | None = None) -> dict[str, float]:
    """Ratios from a config value: ``"9:6:2:2"`` or ``[9, 6, 2, 2]`` with ``names`` in the same
    order, or a dict ``{name: weight}`` (weights may be numeric strings)."""
    if isinstance(value, Mapping):
        pairs = list(value.items())
    else:
        parts = value.split(":") if isinstance(value, str) else list(value)
        if names is None or len(names) != len(parts):
            raise ConfigError(f"ratios {value!r} give {len(parts)} weights; name the sources "
                              f"({'none' if names is None else len(names)} given) in the same order")
        pairs = list(zip(names, parts))
    ratios, problems = {}, []
    for name, weight in pairs:
        try:
            ratios[str(name)] = float(weight.strip() if isinstance(weight, str) else weight)
        except (TypeError, ValueError):
            problems.append(f"weight {weight!r} of {name!r} is not a number")
    if problems:
        raise ConfigError(f"ratios {value!r}: " + "; ".join(problems))
    return ratios
