"""MixedSampler: exact per-block ratios, pure draws, per-epoch coverage, seeded."""

import random
from collections import Counter

import pytest

from pixelagent.data.mixing import MixedSampler, integer_ratios, ratios_from_config
from pixelagent.errors import ConfigError

STAGE1 = ["semantic", "refer", "vqa", "caption"]
SIZES = {"semantic": 23, "refer": 11, "vqa": 5, "caption": 7}


def stage1(seed=0):
    return MixedSampler(SIZES, ratios_from_config("9:6:2:2", STAGE1), seed)


def test_every_block_holds_the_ratios_exactly():
    sampler = stage1()
    assert sampler.block_size == 19 and sampler.counts == {"caption": 2, "refer": 6, "semantic": 9, "vqa": 2}
    draws = [sampler.draw(step) for step in range(19 * 12)]
    for block in range(12):
        counts = Counter(source for source, _ in draws[19 * block:19 * (block + 1)])
        assert counts == {"semantic": 9, "refer": 6, "vqa": 2, "caption": 2}
    assert len({tuple(s for s, _ in draws[19 * b:19 * (b + 1)]) for b in range(12)}) > 1  # orders are shuffled
    assert sampler.consumed(19 * 12) == {"semantic": 108, "refer": 72, "vqa": 24, "caption": 24}


def test_draw_is_a_pure_function_of_the_step():
    steps = list(range(400))
    in_order = [stage1(seed=5).draw(s) for s in steps]
    shuffled = steps[:]
    random.Random(1).shuffle(shuffled)
    fresh = stage1(seed=5)
    assert {s: fresh.draw(s) for s in shuffled} == dict(zip(steps, in_order))
    assert stage1(seed=5).draw(10**9) == stage1(seed=5).draw(10**9)  # resume far ahead, nothing replayed


def test_sharding_and_resume_partition_the_stream():
    sampler = stage1(seed=2)
    world = [list(sampler.draws(0, 120, rank=r, world_size=3)) for r in range(3)]
    interleaved = [world[s % 3][s // 3] for s in range(120)]
    assert interleaved == [sampler.draw(s) for s in range(120)]
    assert list(sampler.draws(57, 60)) == [sampler.draw(s) for s in (57, 58, 59)]
    with pytest.raises(ConfigError, match="rank 3"):
        next(sampler.draws(rank=3, world_size=3))


def test_each_epoch_of_a_source_covers_every_index_once():
    sampler = stage1(seed=9)
    per_source = {name: [] for name in SIZES}
    for step in range(19 * 60):
        source, index = sampler.draw(step)
        per_source[source].append(index)
    for name, indices in per_source.items():
        size = SIZES[name]
        full = len(indices) // size
        assert full >= 2
        epochs = [indices[e * size:(e + 1) * size] for e in range(full)]
        assert all(sorted(epoch) == list(range(size)) for epoch in epochs)
        assert epochs[0] != epochs[1]  # a fresh permutation per epoch


def test_seeds_differ():
    a, b = stage1(seed=0), stage1(seed=1)
    assert [a.draw(s) for s in range(60)] != [b.draw(s) for s in range(60)]


def test_stage2_four_to_one_from_a_string():
    sampler = MixedSampler({"prist": 50, "vqa": 9}, ratios_from_config("4:1", ["prist", "vqa"]), seed=3)
    sources = [sampler.draw(s)[0] for s in range(100)]
    assert sampler.block_size == 5 and sources.count("prist") == 80 and sources.count("vqa") == 20
    for block in range(20):
        assert sources[5 * block:5 * block + 5].count("vqa") == 1


def test_ratio_forms_reduce_to_small_integers():
    assert integer_ratios({"a": 10, "b": 2}) == {"a": 5, "b": 1}
    assert integer_ratios({"a": 0.45, "b": 0.3, "c": 0.1, "d": 0.1}) == {"a": 9, "b": 6, "c": 2, "d": 2}
    assert ratios_from_config({"prist": "4", "vqa": 1}) == {"prist": 4.0, "vqa": 1.0}
    assert ratios_from_config([9, 6], ["x", "y"]) == {"x": 9.0, "y": 6.0}
    assert ratios_from_config(" 9 : 6:2:2", STAGE1)["semantic"] == 9.0
    with pytest.raises(ConfigError, match="give 4 weights; name the sources"):
        ratios_from_config("9:6:2:2", ["a", "b"])
    with pytest.raises(ConfigError, match="weight 'x' of 'b' is not a number"):
        ratios_from_config("4:x", ["a", "b"])
    with pytest.raises(ConfigError, match="blocks of"):
        integer_ratios({"a": 0.123, "b": 0.877, "c": 0.001 * 997 / 991})


@pytest.mark.parametrize("sizes, ratios, problem", [
    ({"a": 0, "b": 3}, {"a": 1, "b": 1}, "source 'a' has 0 examples"),
    ({"a": 4, "b": 3}, {"a": 1}, "source 'b' has no ratio"),
    ({"a": 4}, {"a": 1, "c": 2}, "ratio given for 'c', which is not a source"),
    ({"a": 4}, {"a": -1}, "ratio of 'a' must be a positive number"),
    ({"a": 4}, {"a": float("nan")}, "ratio of 'a' must be a positive number"),
    ({}, {}, "no sources to mix"),
])
def test_bad_mixes_are_config_errors(sizes, ratios, problem):
    with pytest.raises(ConfigError, match=problem):
        MixedSampler(sizes, ratios, seed=0)


def test_all_problems_reported_together():
    with pytest.raises(ConfigError) as info:
        MixedSampler({"a": 0, "b": 2}, {"c": 1}, seed=0)
    assert all(p in str(info.value) for p in ("'a' has no ratio", "'b' has no ratio", "'c', which is not",
                                              "'a' has 0 examples"))
