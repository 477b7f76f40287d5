"""Hostile input to the importers (``data import-published``) and to canonical datasets
(``read_records`` / ``load_split``, the eval recipe), through the real entry points.

Each case must end in a clear one-line error (or, for the mixed file, the right result) within
its time limit and under the suite's memory ceiling; see ``conftest.py``.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest

from pixelagent.data.prist import load_published
from pixelagent.data.records import load_split, read_records
from pixelagent.errors import ConfigError

DIALOGUE = [{"from": "human", "value": "What is on the bottle?"}, {"from": "gpt", "value": "A red label."},
            {"from": "human", "value": "Please segment it."}, {"from": "gpt", "value": "Sure, it is [SEG]."}]
SQUARE = [[10, 10], [30, 10], [30, 30], [10, 30]]
GIB = 1 << 30


def entry(img_id="img1.jpg", focus="red label"):
    return {"img_id": img_id, "dialogue": DIALOGUE, "focus": focus}


def labelme(*shapes, height=64, width=64):
    return {"imageHeight": height, "imageWidth": width,
            "shapes": [{"label": label, "points": points, "shape_type": kind} for label, points, kind in shapes]}


def write_published(tmp_path: Path, entries, files: dict | None = None) -> tuple[Path, Path]:
    """test.json (a list, or raw bytes) and ann/{stem}.json files (dicts, raw bytes or text)."""
    json_path = tmp_path / "test.json"
    if isinstance(entries, bytes):
        json_path.write_bytes(entries)
    else:
        json_path.write_text(json.dumps(entries))
    annotations = tmp_path / "ann"
    annotations.mkdir(exist_ok=True)
    for stem, content in (files or {}).items():
        path = annotations / f"{stem}.json"
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content if isinstance(content, str) else json.dumps(content))
    return json_path, annotations


def import_published(cli, tmp_path, *extra):
    return cli("data", "import-published", str(tmp_path / "test.json"), "--out", str(tmp_path / "out"), *extra)


def assert_skipped(result, tmp_path, *words, skipped=1, total=1):
    """The import exited 1 with one ``skipped`` line per bad record containing ``words``, and
    wrote nothing when every record was bad."""
    code, out, err = result
    assert code == 1, (out, err)
    skips = [line for line in err.splitlines() if line.startswith("skipped ")]
    assert len(skips) == skipped, err
    for word in words:
        assert word.lower() in skips[0].lower(), f"{word!r} not in {skips[0]!r}"
    assert f"error: {skipped} of {total} records skipped" in err
    if skipped == total:
        assert not (tmp_path / "out" / "test.jsonl").exists()
    return skips


# -- LabelMe files ------------------------------------------------------------------------------------
@pytest.mark.hostile("importers")
def test_a_labelme_file_claiming_200000_by_200000_is_refused_in_milliseconds(cli, tmp_path, expect_clear_error):
    json_path, annotations = write_published(tmp_path, [entry()], {
        "img1": labelme(("red label", SQUARE, "polygon"), height=200_000, width=200_000)})
    expect_clear_error(lambda: load_published(json_path, annotations_dir=annotations),
                       "img1.json", "200000x200000", "over the limit", within_s=0.5)
    started = time.perf_counter()
    result = import_published(cli, tmp_path, "--annotations", str(annotations))
    assert time.perf_counter() - started < 2.0
    assert_skipped(result, tmp_path, "test.json[0]", "img1.json", "40,000,000,000 pixels")


@pytest.mark.hostile("importers")
@pytest.mark.parametrize("points", [[[5, 5]], [[5, 5], [40, 40]]], ids=["1-point", "2-point"])
def test_a_polygon_of_one_or_two_points_is_refused_not_an_empty_mask(cli, tmp_path, points):
    write_published(tmp_path, [entry()], {"img1": labelme(("red label", points, "polygon"))})
    assert_skipped(import_published(cli, tmp_path, "--annotations", str(tmp_path / "ann")), tmp_path,
                   "img1.json", "shapes[0]", f"at least 3 points, this one has {len(points)}")


@pytest.mark.hostile("importers")
@pytest.mark.parametrize("raw, words", [
    ("NaN", ["not a finite number"]), ("Infinity", ["not a finite number"]), ("-Infinity", ["not a finite number"]),
    ('"nan"', ["'nan'", "not a number"]), ('"inf"', ["'inf'", "not a number"]), ('"12"', ["'12'", "not a number"]),
    ("null", ["none, not a number"]), ("{}", ["not a number"]), ("[1, 2]", ["not a number"]), ("1e400", ["finite"]),
])
def test_non_finite_or_non_numeric_coordinates_are_refused(cli, tmp_path, raw, words):
    text = ('{"imageHeight": 64, "imageWidth": 64, "shapes": [{"label": "red label", "shape_type": "polygon", '
            f'"points": [[10, 10], [{raw}, 10], [30, 30]]}}]}}')
    write_published(tmp_path, [entry()], {"img1": text})
    assert_skipped(import_published(cli, tmp_path, "--annotations", str(tmp_path / "ann")), tmp_path,
                   "img1.json", "points[1]", *words)


@pytest.mark.hostile("importers")
@pytest.mark.parametrize("points", ["10,10,30,30", [10, 10, 30, 30], [[10, 10], "x", [30, 30]], None])
def test_points_that_are_not_pairs_are_refused(cli, tmp_path, points):
    write_published(tmp_path, [entry()], {"img1": labelme(("red label", points, "polygon"))})
    assert_skipped(import_published(cli, tmp_path, "--annotations", str(tmp_path / "ann")), tmp_path,
                   "img1.json", "shapes[0]")


@pytest.mark.hostile("importers")
@pytest.mark.parametrize("focus", ["", "   "])
def test_an_empty_focus_is_refused_instead_of_matching_every_label(cli, tmp_path, focus):
    write_published(tmp_path, [entry(focus=focus)], {"img1": labelme(("bottle", SQUARE, "polygon"))})
    assert_skipped(import_published(cli, tmp_path, "--annotations", str(tmp_path / "ann")), tmp_path,
                   "test.json[0]", "focus", "empty")


@pytest.mark.hostile("importers")
def test_a_focus_matching_no_shape_is_refused_naming_the_labels(cli, tmp_path):
    write_published(tmp_path, [entry(focus="red label")], {
        "img1": labelme(("bottle", SQUARE, "polygon"), ("cap", SQUARE, "polygon"))})
    assert_skipped(import_published(cli, tmp_path, "--annotations", str(tmp_path / "ann")), tmp_path,
                   "img1.json", "'red label'", "'bottle', 'cap'")


@pytest.mark.hostile("importers")
@pytest.mark.parametrize("kind, points", [("line", [[1, 1], [40, 40]]), ("point", [[5, 5]]),
                                          ("linestrip", [[1, 1], [40, 40], [1, 40]])])
def test_shapes_that_cannot_be_a_mask_are_refused_when_they_match(cli, tmp_path, kind, points):
    write_published(tmp_path, [entry()], {"img1": labelme(("red label", points, kind))})
    assert_skipped(import_published(cli, tmp_path, "--annotations", str(tmp_path / "ann")), tmp_path,
                   "img1.json", f"shape_type '{kind}' cannot be filled")


@pytest.mark.hostile("importers")
def test_a_huge_circle_does_not_hang_the_rasteriser(cli, tmp_path):
    write_published(tmp_path, [entry()], {"img1": labelme(("red label", [[5, 5], [5, 9e8]], "circle"))})
    code, out, err = import_published(cli, tmp_path, "--annotations", str(tmp_path / "ann"))
    assert code == 0, err
    (record,) = read_records(tmp_path / "out" / "test.jsonl")
    assert record.targets[0].mask.area == 64 * 64


# -- image paths ----------------------------------------------------------------------------------------
@pytest.mark.hostile("importers")
@pytest.mark.parametrize("img_id, words", [("../../x.png", ["climbs out"]), ("/etc/passwd", ["is absolute"]),
                                           ("C:\\Windows\\x.png", ["backslash"]), ("a\x00.png", ["control"])])
def test_img_ids_leaving_the_images_folder_are_refused(cli, tmp_path, img_id, words):
    write_published(tmp_path, [entry(img_id=img_id)])
    assert_skipped(import_published(cli, tmp_path), tmp_path, "test.json[0]", "img_id", *words)


@pytest.mark.hostile("importers")
@pytest.mark.parametrize("prefix", ["../elsewhere", "/abs/images"])
def test_an_images_prefix_leaving_the_dataset_folder_is_refused_at_once(cli, tmp_path, prefix):
    write_published(tmp_path, [entry()])
    code, out, err = import_published(cli, tmp_path, "--images-prefix", prefix)
    assert code == 1 and "--images-prefix" in err and not (tmp_path / "out").exists()


# -- files that are not what they claim ------------------------------------------------------------------
@pytest.mark.hostile("importers", timeout=10)
def test_a_fifo_as_test_json_fails_fast(cli, tmp_path):
    os.mkfifo(tmp_path / "test.json")
    code, out, err = import_published(cli, tmp_path)
    assert code == 1 and "FIFO" in err


@pytest.mark.hostile("importers", timeout=10)
def test_a_fifo_as_a_labelme_file_fails_fast(cli, tmp_path):
    write_published(tmp_path, [entry(), entry(img_id="img2.jpg")], {"img2": labelme(("red label", SQUARE, "polygon"))})
    os.mkfifo(tmp_path / "ann" / "img1.json")
    skips = assert_skipped(import_published(cli, tmp_path, "--annotations", str(tmp_path / "ann")), tmp_path,
                           "img1.json", "FIFO", skipped=1, total=2)
    assert "test.json[0]" in skips[0]
    assert [r.image for r in read_records(tmp_path / "out" / "test.jsonl")] == ["images/img2.jpg"]


@pytest.mark.hostile("importers", timeout=10)
def test_dev_zero_as_test_json_fails_fast(cli, tmp_path):
    code, out, err = cli("data", "import-published", "/dev/zero", "--out", str(tmp_path / "out"))
    assert code == 1 and "character device" in err and not (tmp_path / "out").exists()


@pytest.mark.hostile("importers", timeout=10)
def test_huge_files_where_json_is_expected_are_refused_by_size(cli, tmp_path):
    with open(tmp_path / "test.json", "wb") as handle:  # sparse: no disk used, nothing read
        handle.truncate(2 * GIB)
    code, out, err = import_published(cli, tmp_path)
    assert code == 1 and "over the" in err and "limit" in err
    write_published(tmp_path, [entry()])
    with open(tmp_path / "ann" / "img1.json", "wb") as handle:
        handle.truncate(GIB // 2)
    assert_skipped(import_published(cli, tmp_path, "--annotations", str(tmp_path / "ann")), tmp_path,
                   "img1.json", "bytes, over the")


@pytest.mark.hostile("importers")
def test_non_utf8_test_json_is_one_line(cli, tmp_path):
    write_published(tmp_path, '[{"img_id": "caf\xe9.jpg"}]'.encode("latin-1"))
    code, out, err = import_published(cli, tmp_path)
    assert code == 1 and "not UTF-8" in err and "byte 0xe9" in err


@pytest.mark.hostile("importers")
def test_non_utf8_labelme_file_skips_its_record(cli, tmp_path):
    write_published(tmp_path, [entry()], {"img1": b'{"imageHeight": 8, "imageWidth": 8, "shapes": [{"label": "\xff"}]}'})
    assert_skipped(import_published(cli, tmp_path, "--annotations", str(tmp_path / "ann")), tmp_path,
                   "img1.json", "not UTF-8")


@pytest.mark.hostile("importers")
@pytest.mark.parametrize("content", [json.dumps([entry()])[:40].encode(), b"", b"[" * 200_000, b'{"img_id": 1}'],
                         ids=["truncated", "empty", "deeply-nested", "not-a-list"])
def test_a_broken_test_json_is_one_line(cli, tmp_path, content):
    write_published(tmp_path, content)
    code, out, err = import_published(cli, tmp_path)
    assert code == 1 and "test.json" in err and not (tmp_path / "out").exists()


@pytest.mark.hostile("importers")
def test_a_truncated_labelme_file_skips_its_record(cli, tmp_path):
    text = json.dumps(labelme(("red label", SQUARE, "polygon")))
    write_published(tmp_path, [entry()], {"img1": text[: len(text) // 2]})
    assert_skipped(import_published(cli, tmp_path, "--annotations", str(tmp_path / "ann")), tmp_path,
                   "img1.json", "not valid JSON")


@pytest.mark.hostile("importers", expect="result")
def test_a_mixed_file_writes_the_good_records_and_counts_the_bad(cli, tmp_path):
    entries = [entry(), entry(img_id="../../x.png"), entry(img_id="img2.jpg"), entry(focus=""),
               entry(img_id="img3.jpg"), entry(img_id="/etc/passwd"), entry(img_id="img2.jpg", focus="cap")]
    write_published(tmp_path, entries, {
        "img1": labelme(("red label", SQUARE, "polygon")),
        "img2": labelme(("red label", [[1, 1], [9, 9]], "rectangle"), ("bottle cap", SQUARE, "polygon")),
        "img3": labelme(("red label", [[5, 5], [1, 1]], "polygon"), height=200_000, width=200_000)})
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / "test.jsonl").write_text("previous import\n")
    code, out, err = import_published(cli, tmp_path, "--annotations", str(tmp_path / "ann"))
    assert code == 1
    skips = [line for line in err.splitlines() if line.startswith("skipped ")]
    assert [re.search(r"test\.json\[(\d+)\]", line)[1] for line in skips] == ["1", "3", "4", "5"]
    assert "img3.json" in skips[2] and "pixels" in skips[2]
    assert "error: 4 of 7 records skipped" in err
    assert "wrote 3 records on 2 images" in out and "skipped 4" in out
    records = list(read_records(out_dir / "test.jsonl"))
    assert [r.id for r in records] == ["prist-test-00000", "prist-test-00002", "prist-test-00006"]
    assert records[1].targets[0].mask.area == 81 and records[2].targets[0].mask.area == 21 * 21
    assert sorted(p.name for p in out_dir.iterdir()) == ["test.jsonl"]  # replaced whole, no temporary left


# -- canonical records and the eval recipe ---------------------------------------------------------------
def record_line(**changes) -> str:
    data = {"id": "r1", "image": "images/a.png", "focus": "the sign", "messages": [
        {"role": "user", "text": "Segment the sign."}, {"role": "assistant", "text": "[OBJ]the sign[SEG]."}]}
    data.update(changes)
    return json.dumps(data)


@pytest.mark.hostile("datasets")
@pytest.mark.parametrize("image, word", [("../../x.png", "climbs out"), ("/etc/passwd", "is absolute"),
                                         ("images/../../../etc/passwd", "climbs out"), ("\\\\host\\x", "backslash")])
def test_a_canonical_record_whose_image_leaves_the_folder_names_file_and_line(tmp_path, expect_clear_error,
                                                                             image, word):
    (tmp_path / "test.jsonl").write_text(record_line() + "\n" + record_line(id="r2", image=image) + "\n")
    expect_clear_error(lambda: load_split(tmp_path, "test"), "test.jsonl:2: invalid record: image", word,
                       kind=ConfigError)


@pytest.mark.hostile("datasets")
def test_eval_prist_refuses_an_escaping_image_before_building_the_model(cli, tmp_path):
    (tmp_path / "test.jsonl").write_text(record_line(image="../../x.png") + "\n")
    code, out, err = cli("recipe", "eval-prist", "--preset", "miras-tiny", "--data", str(tmp_path),
                         "--out", str(tmp_path / "eval"))
    assert code == 1 and "test.jsonl:1: invalid record: image" in err and "climbs out" in err
    assert not (tmp_path / "eval").exists()


@pytest.mark.hostile("datasets")
def test_eval_predict_refuses_a_forged_record(tmp_path, expect_clear_error):
    import importlib.util

    from pixelagent.data.records import PristRecord

    spec = importlib.util.spec_from_file_location(
        "eval_prist_hostile", Path(__file__).resolve().parents[2] / "recipes" / "eval_prist.py")
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    record = PristRecord.model_validate_json(record_line())
    forged = record.model_construct(**{**dict(record), "image": "/etc/passwd"})  # validation bypassed
    expect_clear_error(lambda: recipe.predict(None, forged, tmp_path), "record r1", "is absolute", kind=ConfigError)


@pytest.mark.hostile("datasets", timeout=10)
def test_a_fifo_as_a_records_file_fails_fast(tmp_path, expect_clear_error):
    os.mkfifo(tmp_path / "test.jsonl")
    expect_clear_error(lambda: load_split(tmp_path, "test"), "test.jsonl", "FIFO", within_s=1)
    expect_clear_error(lambda: list(read_records("/dev/zero")), "character device", within_s=1)


@pytest.mark.hostile("datasets")
def test_non_utf8_bytes_in_a_jsonl_name_file_and_line(tmp_path, expect_clear_error):
    (tmp_path / "test.jsonl").write_bytes(record_line().encode() + b"\n" + record_line().encode().replace(b'"r1"', b'"caf\xe9"'))
    expect_clear_error(lambda: load_split(tmp_path, "test"), "test.jsonl:2: not UTF-8", "0xe9")


@pytest.mark.hostile("datasets")
def test_a_truncated_jsonl_line_names_file_and_line(tmp_path, expect_clear_error):
    (tmp_path / "test.jsonl").write_text(record_line() + "\n" + record_line()[:30])
    expect_clear_error(lambda: load_split(tmp_path, "test"), "test.jsonl:2: invalid record")


@pytest.mark.hostile("datasets", timeout=15)
def test_a_huge_file_without_newlines_is_refused_not_read_whole(tmp_path, expect_clear_error):
    with open(tmp_path / "test.jsonl", "wb") as handle:
        handle.truncate(2 * GIB)  # sparse zeros, no newline
    expect_clear_error(lambda: load_split(tmp_path, "test"), "test.jsonl:1", "line longer than")


@pytest.mark.hostile("datasets")
@pytest.mark.parametrize("changes", [
    {"image_size": [200_000, 200_000]},
    {"targets": [{"phrase": "the sign", "mask": {"size": [200_000, 200_000], "counts": "0"}}]},
    {"targets": [{"phrase": "the sign", "polygons": [[[1, 2], ["NaN", 3], [4, 5]]]}]},
], ids=["image_size", "rle-size", "nan-polygon"])
def test_canonical_records_with_impossible_sizes_are_refused_before_allocating(tmp_path, expect_clear_error, changes):
    (tmp_path / "test.jsonl").write_text(record_line(**changes) + "\n")
    expect_clear_error(lambda: load_split(tmp_path, "test"), "test.jsonl:1: invalid record", within_s=1)
