"""PRIST-Synth: deterministic scenes with exact masks, PRIST-style dialogues, splits and stats."""

import math
import re
from collections import Counter

import numpy as np
import pytest
from pydantic import ValidationError

from pixelagent.data.records import SPLITS, Message, PristRecord, read_records, write_records
from pixelagent.data.synth import (
    ANSWERS,
    GRANULARITY_MIX,
    REQUESTS,
    SynthConfig,
    dataset_stats,
    generate_scene,
    make_samples,
    synthesize,
)
from pixelagent.data.synth import geometry as geo
from pixelagent.data.synth.catalog import EXTRA
from pixelagent.data.synth.dialogue import eligible
from pixelagent.data.synth.writer import split_counts
from pixelagent.errors import ConfigError
from pixelagent.markup import find_focus_spans
from pixelagent.mask import classify_granularity

N, SEED = 300, 11


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """One 300-sample run at 256 px (100 images), shared by the tests that read a dataset."""
    out = tmp_path_factory.mktemp("synth")
    report = synthesize(out, SynthConfig(n=N, size=256, seed=SEED))
    records = {split: list(read_records(out / f"{split}.jsonl")) for split in SPLITS}
    return out, report, records


@pytest.fixture(scope="module")
def scenes():
    return [generate_scene(np.random.default_rng([3, i]), 256) for i in range(16)]


def all_records(records):
    return [r for split in SPLITS for r in records[split]]


def iou(a, b):
    return (a & b).sum() / max(1, (a | b).sum())


def files(directory):
    return {p.relative_to(directory).as_posix(): p.read_bytes()
            for p in sorted(directory.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------- determinism


def test_same_seed_gives_identical_files_and_another_seed_does_not(tmp_path):
    runs = {}
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        synthesize(tmp_path / name, SynthConfig(n=12, size=128, seed=seed))
        runs[name] = files(tmp_path / name)
    assert runs["a"] == runs["b"]
    assert any(name.startswith("images/") for name in runs["a"])
    assert runs["a"]["train.jsonl"] != runs["c"]["train.jsonl"]
    images = lambda run: [v for k, v in sorted(run.items()) if k.startswith("images/")]  # noqa: E731
    assert images(runs["a"]) != images(runs["c"])


def test_generate_scene_depends_only_on_the_generator_state():
    one = generate_scene(np.random.default_rng(42), 256)
    two = generate_scene(np.random.default_rng(42), 256)
    other = generate_scene(np.random.default_rng(43), 256)
    assert np.array_equal(one.image, two.image)
    assert list(one.elements) == list(two.elements)
    assert all(one.elements[k].mask == two.elements[k].mask for k in one.elements)
    assert not np.array_equal(one.image, other.image)


@pytest.mark.parametrize("size", [128, 1024])
def test_any_size_from_128_to_1024_works(size):
    scene = generate_scene(np.random.default_rng(1), size)
    assert scene.image.shape == (size, size, 3) and scene.image.dtype == np.uint8
    assert 2 <= len(scene.objects) <= 5
    assert all(e.mask.shape == (size, size) for e in scene.elements.values())
    samples = make_samples(scene, np.random.default_rng(2))
    assert len(samples) == 3 and all(s.record.image_size == (size, size) for s in samples)


# ----------------------------------------------------------------------------- geometry


def point_in_polygon(x, y, poly):
    """Plain crossing-number test, independent of geometry.rasterize."""
    inside = False
    for (xa, ya), (xb, yb) in zip(poly, np.roll(poly, -1, axis=0)):
        if (ya <= y < yb or yb <= y < ya) and x < xa + (y - ya) * (xb - xa) / (yb - ya):
            inside = not inside
    return inside


def test_rasterize_agrees_with_a_point_in_polygon_test_at_pixel_centres():
    rng = np.random.default_rng(0)
    polys = [geo.circle(20.3, 18.7, 11.2), geo.rounded_rect(3.2, 30.5, 37.9, 44.1, 4.0),
             geo.regular_polygon(30, 12, 9.5, 8, math.pi / 8), *geo.ring_segments(12, 12, 4, 9, 0, math.pi, 5)]
    for poly in polys:
        mask = geo.rasterize([poly], (48, 48))
        for r, c in rng.integers(0, 48, size=(300, 2)):
            assert mask[r, c] == point_in_polygon(c + 0.5, r + 0.5, poly), (poly, r, c)


def test_rasterize_is_exact_for_rectangles_and_unions_overlaps():
    assert geo.rasterize([geo.rect(2, 3, 10, 7)], (20, 20)).sum() == 32
    a, b = geo.circle(30, 30, 12), geo.circle(40, 30, 12)
    union = geo.rasterize([a, b], (64, 64))
    assert np.array_equal(union, geo.rasterize([a], (64, 64)) | geo.rasterize([b], (64, 64)))
    assert abs(geo.rasterize([a], (64, 64)).sum() - math.pi * 144) < 0.02 * math.pi * 144


def test_subtract_tiles_the_difference():
    poly, hole = geo.rect(5, 5, 40, 30), geo.circle(38, 28, 10)
    pieces = geo.subtract(poly, hole)
    assert len(pieces) > 1
    assert sum(geo.area(p) for p in pieces) == pytest.approx(geo.area(poly) - _overlap_area(poly, hole))
    shape = (48, 48)
    expected = geo.rasterize([poly], shape) & ~geo.rasterize([hole], shape)
    assert np.array_equal(geo.rasterize(pieces, shape), expected)


def _overlap_area(poly, hole):
    inter = poly
    for a, b in zip(hole, np.roll(hole, -1, axis=0)):
        inter = geo.clip_halfplane(inter, a, b)
    return geo.area(inter) if len(inter) >= 3 else 0.0


# ----------------------------------------------------------------------------- masks


def test_every_element_polygon_rasterises_to_its_mask(scenes):
    big = generate_scene(np.random.default_rng(9), 1024)
    for scene in [*scenes, big]:
        shape = (scene.size, scene.size)
        for element in scene.elements.values():
            if not element.mask.is_empty:
                assert iou(geo.rasterize(element.polygons, shape), element.mask.array) > 0.98, element.id


def test_stored_polygons_rasterise_to_stored_masks(dataset):
    _, _, records = dataset
    for record in all_records(records)[:120]:
        target = record.targets[0]
        assert target.polygons and all(len(p) >= 3 for p in target.polygons)
        drawn = geo.rasterize([np.asarray(p, dtype=float) for p in target.polygons], record.image_size)
        assert iou(drawn, target.mask.array) > 0.98, record.id


def test_parts_lie_in_their_object_words_in_their_part_and_objects_do_not_overlap(scenes):
    occluded = 0
    for scene in scenes:
        seen = np.zeros((scene.size, scene.size), dtype=bool)
        for obj in scene.objects:
            whole = scene.element(obj.id)
            assert not (whole.mask.array & seen).any(), "two objects claim the same pixel"
            seen |= whole.mask.array
            occluded += whole.mask.area < whole.full_area
            for part in obj.parts:
                assert not (scene.element(part).mask.array & ~whole.mask.array).any()
            if obj.text:
                word = scene.element(obj.text).mask.array
                assert not (word & ~scene.element(obj.text_part).mask.array).any()
    assert occluded, "no scene had an occluded object, so occlusion was not tested"


def test_word_box_frames_the_drawn_letters_tightly(scenes):
    checked = 0
    for scene in scenes:
        for obj in scene.objects:
            word = scene.element(obj.text) if obj.text else None
            if word is None or word.visible < 1:
                continue
            drawn = scene.ink[obj.text] > 0
            assert drawn.any() and not (drawn & ~word.mask.array).any()
            ix0, iy0, ix1, iy1 = _bbox(drawn)
            bx0, by0, bx1, by1 = word.mask.bbox
            pad = max(1, round(0.15 * (iy1 - iy0)))
            # The box an annotator draws round the word (padding on every side), not the strokes.
            assert ix0 - bx0 == bx1 - ix1 == iy0 - by0 == by1 - iy1 == pad
            assert word.mask.area > drawn.sum()
            checked += 1
    assert checked >= 20


def _bbox(mask):
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return cols[0], rows[0], cols[-1] + 1, rows[-1] + 1


def test_letters_are_painted_in_the_ink_colour_inside_their_box(scenes):
    """Fully inked pixels show one ink colour; the rest of the word's box shows the part's."""
    inked = 0
    for scene in scenes:
        for obj in scene.objects:
            if not obj.text or scene.element(obj.text).visible < 1:
                continue
            coverage, box = scene.ink[obj.text], scene.element(obj.text).mask.array
            bare = np.unique(scene.image[box & (coverage == 0)], axis=0)
            ink = np.unique(scene.image[coverage == 255], axis=0)
            assert len(bare) == 1  # the part's own flat colour round the letters
            assert len(ink) <= 1 and not (ink == bare[0]).all(axis=1).any()
            inked += len(ink)
    assert inked >= 5


def test_amber_route_numbers_are_painted_inside_their_boxes():
    """Amber is used only for route numbers, so every pixel painted exactly amber lies in one."""
    amber = np.array(EXTRA["amber"], dtype=np.uint8)
    for seed in range(40):
        scene = generate_scene(np.random.default_rng([4, seed]), 1024)  # large: solid strokes
        buses = [o for o in scene.objects if o.kind == "bus" and o.text]
        if buses and all(scene.element(b.text).visible == 1 for b in buses):
            break
    else:
        pytest.fail("no scene with a fully visible bus among 40 seeds")
    painted = (scene.image == amber).all(axis=2)
    boxes = np.logical_or.reduce([scene.element(b.text).mask.array for b in buses])
    assert painted.sum() >= 20
    assert not (painted & ~boxes).any()


def test_all_granularities_are_reachable_at_256_and_1024():
    for size, count in ((256, 6), (1024, 3)):
        classes = Counter()
        for i in range(count):
            scene = generate_scene(np.random.default_rng([7, i]), size)
            classes.update(e.granularity.value for e in scene.elements.values() if eligible(scene, e))
        assert set(classes) == {"coarse", "medium", "fine"}, (size, classes)


# ----------------------------------------------------------------------------- records and dialogues


def test_records_round_trip_with_one_target_named_by_the_focus(dataset):
    _, report, records = dataset
    every = all_records(records)
    assert len(every) == N == report.samples
    answer_forms = [re.escape(a).replace(re.escape("{seg}"), r"\[OBJ\](.+)\[SEG\]") for a in ANSWERS]
    for record in every:
        assert record.source == "prist-synth" and record.image_size == (256, 256)
        assert len(record.targets) == 1 and record.seg_count == 1
        target = record.targets[0]
        spans = find_focus_spans(record.messages[-1].text)
        assert target.phrase == record.focus == spans[0].phrase
        assert target.kind in {"object", "part", "text"}
        assert target.mask is not None and not target.mask.is_empty
        assert 2 <= len(record.turns) <= 6
        question, answer = record.turns[-1]
        assert question in REQUESTS
        assert any(re.fullmatch(form, answer) for form in answer_forms), answer
        assert all("[SEG]" not in a for _, a in record.turns[:-1])
        assert record.elements and {"name", "text", "caption"} <= set(record.elements[0])


def test_ids_are_unique_and_name_seed_image_and_sample(dataset):
    _, _, records = dataset
    ids = [r.id for r in all_records(records)]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(rf"synth-{SEED}-\d{{6}}-[0-2]", i) for i in ids)
    for record in all_records(records):
        assert record.image == f"images/{record.id.rsplit('-', 1)[0]}.png"


def test_turn_counts_span_two_to_six_and_follow_the_config(dataset, tmp_path):
    _, _, records = dataset
    counts = Counter(len(r.turns) for r in all_records(records))
    assert set(counts) == {2, 3, 4, 5, 6}
    assert counts.most_common(1)[0][0] == 4  # like PRIST, most dialogues have four rounds
    synthesize(tmp_path, SynthConfig(n=15, seed=1, min_turns=6, max_turns=6))
    assert {len(r.turns) for r in read_records(tmp_path / "train.jsonl")} == {6}


def test_reasoning_path_narrows_from_object_to_part_to_word(scenes):
    kinds = Counter()
    for index, scene in enumerate(scenes):
        for sample in make_samples(scene, np.random.default_rng(index), SynthConfig(samples_per_image=4)):
            record, path = sample.record, [scene.element(i) for i in sample.path]
            expected = {"object": ["object"], "part": ["object", "part"], "text": ["object", "part", "text"]}
            assert [e.kind for e in path] == expected[record.targets[0].kind]
            assert record.reasoning_path[-1] == record.focus and len(record.reasoning_path) == len(path)
            assert record.targets[0].mask == path[-1].mask
            for outer, inner in zip(path, path[1:]):
                assert not (inner.mask.array & ~outer.mask.array).any()
                assert inner.mask.area < outer.mask.area
            kinds[record.targets[0].kind] += 1
    assert set(kinds) == {"object", "part", "text"}


def test_a_text_dialogue_binds_the_colour_to_the_right_instance():
    """With two bottles, the word's phrase names the colour of the bottle it is printed on."""
    for seed in range(60):
        scene = generate_scene(np.random.default_rng(seed), 256)
        kinds = Counter(o.kind for o in scene.objects)
        twins = [o for o in scene.objects if kinds[o.kind] > 1 and o.text and scene.element(o.text).visible == 1]
        if twins:
            break
    else:
        pytest.fail("no scene with same-kind distractors among 60 seeds")
    obj = twins[0]
    assert len({o.colour for o in scene.same_kind(obj)}) == len(scene.same_kind(obj))
    from pixelagent.data.synth.dialogue import text_phrase

    phrase = text_phrase(obj)
    assert obj.colour in phrase and obj.word in phrase
    others = [o for o in scene.same_kind(obj) if o is not obj]
    assert all(f"{o.colour} {o.kind}" not in phrase for o in others)


# ----------------------------------------------------------------------------- mix, splits, stats


def test_granularity_mix_is_close_to_prist(dataset):
    _, _, records = dataset
    classes = Counter(r.targets[0].mask.granularity.value for r in all_records(records))
    for name, share in zip(("coarse", "medium", "fine"), GRANULARITY_MIX):
        assert abs(classes[name] / N - share) <= 0.08, classes


@pytest.mark.parametrize("mix,only", [((1.0, 0.0, 0.0), "coarse"), ((0.0, 0.0, 1.0), "fine")])
def test_granularity_mix_is_configurable(tmp_path, mix, only):
    synthesize(tmp_path, SynthConfig(n=24, seed=2, granularity_mix=mix, splits=(1.0, 0.0, 0.0)))
    assert {r.targets[0].mask.granularity.value for r in read_records(tmp_path / "train.jsonl")} == {only}


def test_splits_are_by_image_with_the_configured_shares(dataset):
    _, report, records = dataset
    images = {split: {r.image for r in records[split]} for split in SPLITS}
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        assert not images[a] & images[b]
    assert [len(images[s]) for s in SPLITS] == [80, 10, 10] == split_counts(100, (0.8, 0.1, 0.1))
    assert all(r.split == split for split in SPLITS for r in records[split])
    assert report.split_images == {"train": 80, "val": 10, "test": 10}


def test_split_counts_sum_to_the_total():
    assert split_counts(7, (0.8, 0.1, 0.1)) == [5, 1, 1]  # 5.6, 0.7, 0.7: the larger remainders win
    assert split_counts(10, (0.5, 0.25, 0.25)) == [5, 3, 2]
    assert sum(split_counts(333, (0.7, 0.2, 0.1))) == 333


def test_stats_match_a_direct_computation(dataset):
    out, _, records = dataset
    stats = dataset_stats(out)
    for split in SPLITS:
        mine, theirs = records[split], stats.splits[split]
        turns = [len(r.messages) // 2 for r in mine]
        assert theirs.samples == len(mine) and theirs.images == len({r.image for r in mine})
        assert theirs.messages == sum(len(r.messages) for r in mine)
        assert (theirs.min_turns, theirs.max_turns) == (min(turns), max(turns))
        assert theirs.mean_turns == pytest.approx(sum(turns) / len(turns))
        grains = Counter(classify_granularity(r.targets[0].mask.area, (256, 256)).value for r in mine)
        shares = {g: grains[g] / len(mine) for g in ("coarse", "medium", "fine")}
        assert theirs.granularity == pytest.approx(shares)
        assert theirs.focus_words == pytest.approx(sum(len(r.focus.split()) for r in mine) / len(mine))
        assert theirs.kinds == {k: sum(r.targets[0].kind == k for r in mine) for k in ("object", "part", "text")}
    assert stats.total.samples == N and stats.total.images == 100
    assert stats.total.utterances == sum(s.utterances for s in stats.splits.values())


def test_stats_count_records_without_masks_but_leave_them_out_of_the_granularity(tmp_path):
    plain = PristRecord(id="p1", image="a.jpg", focus="the sign", messages=[
        Message(role="user", text="Segment it."), Message(role="assistant", text="Sure, [SEG].")])
    write_records(tmp_path / "test.jsonl", [plain, plain.model_copy(update={"id": "p2", "image": "b.jpg"})])
    stats = dataset_stats(tmp_path)
    assert list(stats.splits) == ["test"]
    assert (stats.total.samples, stats.total.images, stats.total.masks) == (2, 2, 0)
    assert stats.total.granularity == {"coarse": 0.0, "medium": 0.0, "fine": 0.0}
    assert stats.total.focus_words == 2 and stats.total.mean_turns == 1


def test_stats_refuse_a_directory_without_splits(tmp_path):
    with pytest.raises(ConfigError, match="no split files"):
        dataset_stats(tmp_path)


# ----------------------------------------------------------------------------- config and output dir


@pytest.mark.parametrize("bad", [
    {"size": 64}, {"size": 2048}, {"n": 0}, {"splits": (0.5, 0.5, 0.5)},
    {"granularity_mix": (0.2, 0.2, 0.2)}, {"min_objects": 4, "max_objects": 3}, {"max_turns": 7},
])
def test_config_rejects_bad_settings(bad):
    with pytest.raises(ValidationError):
        SynthConfig(**bad)


def test_synthesize_refuses_a_non_empty_directory_unless_overwriting(tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="not empty"):
        synthesize(tmp_path, SynthConfig(n=3))
    synthesize(tmp_path, SynthConfig(n=9, seed=1), overwrite=True)
    synthesize(tmp_path, SynthConfig(n=3, seed=1), overwrite=True)
    assert len(list((tmp_path / "images").glob("*.png"))) == 1  # the old run's images are gone
    assert (tmp_path / "notes.txt").read_text() == "keep me"


# ----------------------------------------------------------------------------- other dialogue styles


def test_single_turn_samples_name_their_target_in_the_request(tmp_path):
    synthesize(tmp_path, SynthConfig(n=30, seed=4, min_turns=1, max_turns=1))
    for record in read_records(tmp_path / "train.jsonl"):
        (question, answer), = record.turns
        assert record.focus in answer
        # the request names the target without the position words, which the answer adds
        assert record.focus.split(" on the ")[0].split(" at the ")[0] in question or \
            record.focus in question, (question, record.focus)
        assert question not in REQUESTS


def test_narrowing_dialogues_segment_every_turn_and_narrow_to_the_target(scenes):
    follow_ups = Counter()
    for index, scene in enumerate(scenes):
        config = SynthConfig(samples_per_image=4, style="narrowing")
        for sample in make_samples(scene, np.random.default_rng(index), config):
            record, path = sample.record, [scene.element(i) for i in sample.path]
            assert all(len(find_focus_spans(answer)) == 1 for _, answer in record.turns)
            assert len(record.targets) == len(record.turns)
            # the first turns walk the reasoning path: object, then part, then word
            for target, element in zip(record.targets, path):
                assert target.mask == element.mask and target.kind == element.kind
            assert record.focus == record.targets[-1].phrase
            # follow-ups after the first turn refer back instead of naming the object again
            for (question, _), target in zip(record.turns[1:len(path)], record.targets[1:]):
                assert scene.object(path[0].id).colour not in question
            extra = record.targets[len(path):]
            assert len(extra) <= 1
            if extra:
                follow_ups["broaden" if extra[0].mask == path[0].mask else "switch"] += 1
    assert follow_ups["broaden"] > 0 and follow_ups["switch"] > 0


def test_narrowing_stats_count_every_target(tmp_path):
    report = synthesize(tmp_path, SynthConfig(n=30, seed=5, style="narrowing"))
    records = [r for split in SPLITS for r in read_records(tmp_path / f"{split}.jsonl")]
    assert sum(report.kinds.values()) == sum(len(r.targets) for r in records) > len(records)
