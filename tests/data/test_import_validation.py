"""Validation of what the importers and dataset readers accept: image paths confined to the
dataset folder, LabelMe sizes and shapes, record-by-record import with skips reported."""

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from pixelagent.data.cli import data_app
from pixelagent.data.prist import NoMatchingShape, Skipped, iter_published, load_published
from pixelagent.data.records import (MAX_RECORD_BYTES, PristRecord, check_relative_path, read_records, resolve_in,
                                     write_records)
from pixelagent.errors import ConfigError
from pixelagent.images import DEFAULT_MAX_PIXELS

PUBLISHED = Path(__file__).resolve().parents[3] / "shared" / "prist" / "test.json"
DIALOGUE = [{"from": "human", "value": "What is on the bottle?"}, {"from": "gpt", "value": "A red label."},
            {"from": "human", "value": "Please segment it."}, {"from": "gpt", "value": "Sure, it is [SEG]."}]
SQUARE = [[10, 10], [30, 10], [30, 30], [10, 30]]


def entry(img_id="img1.jpg", focus="red label"):
    return {"img_id": img_id, "dialogue": DIALOGUE, "focus": focus}


def published(tmp_path, entries, labelme=None):
    """``tmp_path/test.json`` and, when ``labelme`` ({stem: dict or text}) is given, ``tmp_path/ann``."""
    (tmp_path / "test.json").write_text(json.dumps(entries))
    annotations = None
    if labelme is not None:
        annotations = tmp_path / "ann"
        annotations.mkdir(exist_ok=True)
        for stem, content in labelme.items():
            text = content if isinstance(content, str) else json.dumps(content)
            (annotations / f"{stem}.json").write_text(text)
    return tmp_path / "test.json", annotations


def labelme(*shapes, height=80, width=100):
    return {"imageHeight": height, "imageWidth": width, "shapes": list(shapes)}


def shape(points, label="red label", shape_type="polygon"):
    return {"label": label, "points": points, "shape_type": shape_type}


def load_one(tmp_path, *shapes, focus="red label", **size):
    json_path, annotations = published(tmp_path, [entry(focus=focus)], {"img1": labelme(*shapes, **size)})
    (record,) = load_published(json_path, annotations_dir=annotations)
    return record


def refusal(tmp_path, *shapes, focus="red label", **size) -> str:
    with pytest.raises(ConfigError) as info:
        load_one(tmp_path, *shapes, focus=focus, **size)
    message = str(info.value)
    assert "\n" not in message and "test.json[0]" in message
    return message


# -- image paths --------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["a.jpg", "images/a.jpg", "images/./a.jpg", "images/../a.jpg", "images//a.jpg",
                                  "images/sub dir/été.png", "..a.jpg", "a..b/c.png"])
def test_relative_paths_inside_the_folder_are_kept_unchanged(path):
    assert check_relative_path(path) == path


@pytest.mark.parametrize("path, problem", [
    ("", "empty"), ("   ", "empty"), ("/etc/passwd", "absolute"), ("//server/share/x.png", "absolute"),
    ("C:/images/x.png", "absolute"), ("c:x.png", "absolute"), ("../x.png", "climbs out"),
    ("../../x.png", "climbs out"), ("images/../../x.png", "climbs out"), ("a/b/../../../x", "climbs out"),
    ("images\\..\\..\\x.png", "backslash"), ("a\x00b.png", "control character"), ("a\nb.png", "control character"),
    (".", "folder itself"), ("images/..", "folder itself"), ("./", "folder itself"),
    ("x\udc80.png", "lone surrogate"), ("a" * 5000, "characters"),
])
def test_paths_leaving_the_folder_are_refused_in_one_line(path, problem):
    with pytest.raises(ConfigError, match=problem) as info:
        check_relative_path(path, "image path")
    assert "\n" not in str(info.value)


def test_non_strings_are_refused():
    with pytest.raises(ConfigError, match="must be a string, got int"):
        check_relative_path(5)


def test_resolve_in_joins_lexically_and_names_where(tmp_path):
    (tmp_path / "shared").mkdir()
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "images").symlink_to(tmp_path / "shared")  # a linked images folder is fine
    assert resolve_in(tmp_path / "data", "images/a.png", "r1") == tmp_path / "data" / "images" / "a.png"
    with pytest.raises(ConfigError, match=r"^r1: image path '\.\./x\.png' climbs out"):
        resolve_in(tmp_path / "data", "../x.png", "r1")


def record_line(**changes) -> str:
    data = {"id": "r1", "image": "images/a.png", "focus": "the sign", "messages": [
        {"role": "user", "text": "Segment the sign."}, {"role": "assistant", "text": "[OBJ]the sign[SEG]."}]}
    data.update(changes)
    return json.dumps(data)


@pytest.mark.parametrize("image, problem", [("../../x.png", "climbs out"), ("/etc/passwd", "absolute"),
                                            ("C:\\x.png", "backslash")])
def test_a_canonical_record_with_an_escaping_image_names_file_and_line(tmp_path, image, problem):
    (tmp_path / "test.jsonl").write_text(record_line() + "\n" + record_line(id="r2", image=image) + "\n")
    with pytest.raises(ConfigError, match=rf"test\.jsonl:2: invalid record: image: image path .*{problem}") as info:
        list(read_records(tmp_path / "test.jsonl"))
    assert "Value error" not in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("changes, problem", [
    ({"image_size": [0, 5]}, "two positive integers"),
    ({"image_size": [200000, 200000]}, "over the limit"),
    ({"targets": [{"phrase": "the sign", "mask": {"size": [200000, 200000], "counts": "0"}}]}, "over the limit"),
    ({"targets": [{"phrase": "the sign", "polygons": [[[1, 2], ["NaN", 3], [4, 5]]]}]}, "finite"),
])
def test_canonical_records_refuse_implausible_sizes_and_coordinates(tmp_path, changes, problem):
    (tmp_path / "test.jsonl").write_text(record_line(**changes) + "\n")
    with pytest.raises(ConfigError, match=rf"test\.jsonl:1: invalid record: .*{problem}"):
        list(read_records(tmp_path / "test.jsonl"))


# -- reading and writing JSON Lines ----------------------------------------------------------------------
def test_undecodable_bytes_are_reported_with_file_and_line(tmp_path):
    path = tmp_path / "test.jsonl"
    path.write_bytes(record_line().encode() + b"\n" + b'{"id": "\xff\xfe"}\n')
    with pytest.raises(ConfigError, match=r"test\.jsonl:2: not UTF-8 \(byte 0xff at column 9\)"):
        list(read_records(path))


def test_a_byte_order_mark_and_blank_lines_are_fine(tmp_path):
    path = tmp_path / "test.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + record_line().encode() + b"\n\n  \n" + record_line(id="r2").encode())
    assert [r.id for r in read_records(path)] == ["r1", "r2"]


def test_non_regular_files_and_overlong_lines_are_refused(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="is a directory"):
        list(read_records(tmp_path))
    fifo = tmp_path / "fifo.jsonl"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match="FIFO"):
        list(read_records(fifo))
    monkeypatch.setattr("pixelagent.data.records.MAX_RECORD_BYTES", 100)
    (tmp_path / "long.jsonl").write_text("x" * 500)
    with pytest.raises(ConfigError, match=r"long\.jsonl:1: line longer than 100 bytes"):
        list(read_records(tmp_path / "long.jsonl"))
    assert MAX_RECORD_BYTES >= 1 << 20


def test_writing_replaces_the_file_only_once_complete(tmp_path):
    good = PristRecord.model_validate_json(record_line())
    path = tmp_path / "test.jsonl"
    write_records(path, [good])
    before = path.read_bytes()

    def failing():
        yield good
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        write_records(path, failing())
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["test.jsonl"]


# -- LabelMe sizes ------------------------------------------------------------------------------------
@pytest.mark.parametrize("height, width, problem", [
    (0, 100, "imageHeight must be a positive integer, got 0"), (80, -3, "imageWidth must be a positive integer"),
    ("80", 100, "imageHeight must be a positive integer, got '80'"), (True, 100, "imageHeight must be a positive"),
    (80.5, 100, "got 80.5"), (None, 100, "got None"),
    (200_000, 200_000, f"200000x200000 = 40,000,000,000 pixels, over the limit of {DEFAULT_MAX_PIXELS:,}"),
])
def test_labelme_sizes_must_be_positive_integers_within_the_pixel_limit(tmp_path, height, width, problem):
    message = refusal(tmp_path, shape(SQUARE), height=height, width=width)
    assert problem in message and "img1.json" in message


def test_integral_float_sizes_are_accepted(tmp_path):
    assert load_one(tmp_path, shape(SQUARE), height=80.0, width=100.0).image_size == (80, 100)


def test_missing_size_and_bad_structure_name_the_labelme_file(tmp_path):
    for content, problem in [({"shapes": []}, "missing field 'imageHeight'"),
                             ([1, 2], "expected a JSON object, got list"),
                             ({"imageHeight": 8, "imageWidth": 8, "shapes": {}}, "'shapes' should be a list"),
                             ({"imageHeight": 8, "imageWidth": 8, "shapes": [5]}, r"shapes\[0\] should be an object"),
                             ({"imageHeight": 8, "imageWidth": 8, "shapes": [{"label": 3}]}, "label should be a string"),
                             ("{\"imageHeight\": 8,", "is not valid JSON")]:
        json_path, annotations = published(tmp_path, [entry()], {"img1": content})
        with pytest.raises(ConfigError, match=problem) as info:
            load_published(json_path, annotations_dir=annotations)
        assert "img1.json" in str(info.value) and "test.json[0]" in str(info.value)


# -- LabelMe shapes -----------------------------------------------------------------------------------
@pytest.mark.parametrize("points, problem", [
    ([[1, 2]], "at least 3 points, this one has 1"), ([[1, 2], [5, 6]], "at least 3 points, this one has 2"),
    ([], "this one has 0"), ([[0, 0], [10, 10], [20, 20]], "zero area"),
    ([[0, 0], [float("nan"), 1], [5, 5]], "nan, not a finite number"),
    ([[0, 0], [float("inf"), 1], [5, 5]], "inf, not a finite number"),
    ([[0, 0], ["nan", 1], [5, 5]], "'nan', not a number"), ([[0, 0], ["3", 1], [5, 5]], "'3', not a number"),
    ([[0, 0], [None, 1], [5, 5]], "None, not a number"), ([[0, 0], [True, 1], [5, 5]], "True, not a number"),
    ([[0, 0], [1], [5, 5]], "points[1] should be an [x, y] pair"), ([[0, 0], 7, [5, 5]], "pair, got 7"),
    ([[0, 0], [1, 2, 3], [5, 5]], "pair"), ("0,0,1,1", "'points' should be a list"),
    ([[0, 0], [1e30, 0], [0, 1e30]], "far outside any image"), ([[0, 0], [10 ** 400, 0], [0, 5]], "finite"),
])
def test_degenerate_or_non_numeric_polygons_are_refused_naming_the_shape(tmp_path, points, problem):
    message = refusal(tmp_path, shape([[0, 0], [1, 0], [0, 1]], label="bottle"), shape(points))
    assert problem in message and "img1.json: shapes[1] (label 'red label')" in message


def test_nan_written_by_json_dumps_is_refused(tmp_path):
    json_path, annotations = published(tmp_path, [entry()], {"img1": '{"imageHeight": 8, "imageWidth": 8, '
                                                                     '"shapes": [{"label": "red label", "points": '
                                                                     '[[0, 0], [NaN, 1], [5, 5]]}]}'})
    with pytest.raises(ConfigError, match="not a finite number"):
        load_published(json_path, annotations_dir=annotations)


def test_bad_shapes_that_do_not_match_the_focus_are_left_alone(tmp_path):
    record = load_one(tmp_path, shape(SQUARE), shape([[1, 1]], label="bottle"),
                      shape([[0, 0], [9, 9]], label="bottle edge", shape_type="line"))
    assert record.targets[0].mask.area == 21 * 21


def test_rectangles_fill_their_box_and_circles_their_disc(tmp_path):
    rectangle = load_one(tmp_path, shape([[30, 25], [10, 5]], shape_type="rectangle"))
    expected = np.zeros((80, 100), bool)
    expected[5:26, 10:31] = True
    assert np.array_equal(rectangle.targets[0].mask.array, expected)
    assert rectangle.targets[0].polygons == [[(10, 5), (30, 5), (30, 25), (10, 25)]]
    circle = load_one(tmp_path, shape([[50, 40], [50, 20]], shape_type="circle"))
    assert abs(circle.targets[0].mask.area - math.pi * 20 ** 2) < 0.1 * math.pi * 20 ** 2
    assert circle.targets[0].mask.array[40, 50] and not circle.targets[0].mask.array[40, 75]
    assert len(circle.targets[0].polygons[0]) == 64  # an outline kept for export


@pytest.mark.parametrize("shape_type, points, problem", [
    ("rectangle", [[1, 1], [5, 5], [9, 9]], "a rectangle needs exactly 2 points"),
    ("rectangle", [[1, 1], [1, 9]], "rectangle has zero area"),
    ("circle", [[5, 5]], "a circle needs exactly 2 points (the centre and a point on the rim)"),
    ("circle", [[5, 5], [5, 5]], "zero radius"),
    ("circle", [[5e8, 5], [5e8, 9e8]], "beyond ±1e+09"),
    ("line", [[1, 1], [5, 5]], "shape_type 'line' cannot be filled into a mask"),
    ("point", [[1, 1]], "shape_type 'point' cannot be filled"),
    ("linestrip", [[1, 1], [5, 5], [9, 1]], "shape_type 'linestrip' cannot be filled"),
    ("mask", [[1, 1], [5, 5]], "shape_type 'mask' cannot be filled"),
])
def test_shape_types_are_honoured(tmp_path, shape_type, points, problem):
    assert problem in refusal(tmp_path, shape(points, shape_type=shape_type))


def test_circles_far_larger_than_the_image_are_filled_quickly(tmp_path):
    import time

    started = time.perf_counter()
    whole = load_one(tmp_path, shape([[5, 5], [5, 9e8]], shape_type="circle"))
    assert whole.targets[0].mask.area == 80 * 100 and time.perf_counter() - started < 2
    edge = load_one(tmp_path, shape([[-5e6 + 30, 40], [30, 40]], shape_type="circle"))  # rim at x = 30
    assert edge.targets[0].mask.array[:, :30].all() and not edge.targets[0].mask.array[:, 32:].any()


def test_a_missing_or_null_shape_type_is_a_polygon(tmp_path):
    record = load_one(tmp_path, {"label": "red label", "points": SQUARE, "shape_type": None})
    assert record.targets[0].mask.area == 21 * 21


def test_an_empty_focus_is_refused_even_without_labelme_files(tmp_path):
    for focus in ("", "   "):
        json_path, _ = published(tmp_path, [entry(focus=focus)])
        with pytest.raises(ConfigError, match=r"test\.json\[0\]: field 'focus' is empty; it would match every label"):
            load_published(json_path)


def test_a_focus_matching_nothing_names_the_labels_present(tmp_path):
    message = refusal(tmp_path, shape(SQUARE, label="Bottle"), shape(SQUARE, label="cap"), shape(SQUARE, label="cap"),
                      focus="red label")
    assert "no shape's label contains the focus 'red label' (labels there: 'Bottle', 'cap')" in message
    with pytest.raises(NoMatchingShape):
        load_one(tmp_path, focus="red label")
    assert "labels there: none" in refusal(tmp_path, focus="red label")


def test_shapes_entirely_outside_the_image_give_no_empty_mask(tmp_path):
    message = refusal(tmp_path, shape([[200, 200], [300, 200], [300, 300]]))
    assert "lie outside the image (80x100, HxW); the mask would be empty" in message


def test_coordinates_partly_outside_the_image_are_clipped(tmp_path):
    record = load_one(tmp_path, shape([[-50, -50], [50, -50], [50, 40], [-50, 40]]))
    assert record.targets[0].mask.area == 51 * 41


@pytest.mark.parametrize("img_id, problem", [("../../x.png", "img_id '../../x.png' climbs out"),
                                             ("/etc/passwd", "img_id '/etc/passwd' is absolute"),
                                             ("", "img_id is empty")])
def test_escaping_img_ids_are_refused_before_any_labelme_file_is_read(tmp_path, img_id, problem):
    json_path, annotations = published(tmp_path, [entry(img_id=img_id)], {})
    with pytest.raises(ConfigError, match=rf"test\.json\[0\]: {problem}"):
        load_published(json_path, annotations_dir=annotations)


def test_the_images_prefix_is_checked_once_up_front(tmp_path):
    json_path, _ = published(tmp_path, [entry()])
    with pytest.raises(ConfigError, match="--images-prefix '../elsewhere' climbs out"):
        iter_published(json_path, images_prefix="../elsewhere")
    (record,) = load_published(json_path, images_prefix="pictures/")
    assert record.image == "pictures/img1.jpg"


def test_iter_published_yields_good_records_and_skips(tmp_path):
    json_path, annotations = published(tmp_path, [entry(), entry(img_id="../x.jpg"), entry(focus="cap"), entry()],
                                       {"img1": labelme(shape(SQUARE))})
    items = list(iter_published(json_path, annotations_dir=annotations))
    assert [type(i).__name__ for i in items] == ["PristRecord", "Skipped", "Skipped", "PristRecord"]
    assert [i.id for i in items] == ["prist-test-00000", "prist-test-00001", "prist-test-00002", "prist-test-00003"]
    skipped = [i for i in items if isinstance(i, Skipped)]
    assert skipped[0].where.endswith("test.json[1]") and isinstance(skipped[1].error, NoMatchingShape)


def test_whole_file_problems_raise_at_once(tmp_path):
    for content, problem in [(b"[{\"img_id\": ", "is not valid JSON"), (b"{}", "expected a JSON list"),
                             (b"[\xff]", "is not UTF-8 text"), (b"[" * 100_000, "not valid JSON|nested too deeply")]:
        (tmp_path / "test.json").write_bytes(content)
        with pytest.raises(ConfigError, match=problem):
            iter_published(tmp_path / "test.json")


# -- the command ----------------------------------------------------------------------------------------
def invoke(*args):
    return CliRunner().invoke(data_app, [str(a) for a in args])


def test_import_writes_the_good_records_and_reports_the_skipped(tmp_path):
    json_path, annotations = published(
        tmp_path, [entry(), entry(img_id="../../x.png"), entry(focus=""), entry(focus="cap"), entry(img_id="img2.jpg")],
        {"img1": labelme(shape(SQUARE), shape([[1, 1], [2, 2]], label="broken red label thing")),
         "img2": labelme(shape(SQUARE))})
    out = tmp_path / "out"
    result = invoke("import-published", json_path, "--out", out, "--annotations", annotations)
    assert result.exit_code == 1
    assert isinstance(result.exception, ConfigError)
    assert str(result.exception) == "4 of 5 records skipped (listed above); fix them and rerun to import them too"
    skips = [line for line in result.stderr.splitlines() if line.startswith("skipped ")]
    assert len(skips) == 4
    assert "test.json[0]: LabelMe file" in skips[0] and "img1.json: shapes[1]" in skips[0]
    assert "test.json[1]: img_id '../../x.png' climbs out" in skips[1]
    assert "test.json[2]: field 'focus' is empty" in skips[2]
    assert "test.json[3]: LabelMe file" in skips[3] and "'cap'" in skips[3]
    assert "wrote 1 records on 1 images" in result.stdout and "skipped 4" in result.stdout
    assert [r.id for r in read_records(out / "test.jsonl")] == ["prist-test-00004"]
    assert sorted(p.name for p in out.iterdir()) == ["test.jsonl"]  # no temporary file left


def test_an_import_where_every_record_fails_keeps_the_previous_file(tmp_path):
    out = tmp_path / "out"
    json_path, _ = published(tmp_path, [entry()])
    assert invoke("import-published", json_path, "--out", out).exit_code == 0
    before = (out / "test.jsonl").read_bytes()
    published(tmp_path, [entry(img_id="/etc/passwd")])
    result = invoke("import-published", json_path, "--out", out)
    assert result.exit_code == 1 and "every record was skipped" in result.stdout
    assert (out / "test.jsonl").read_bytes() == before


def test_import_refuses_a_missing_annotations_folder_and_a_bad_out_at_once(tmp_path):
    json_path, _ = published(tmp_path, [entry()])
    result = invoke("import-published", json_path, "--out", tmp_path / "o", "--annotations", tmp_path / "none")
    assert result.exit_code == 1 and "--annotations" in str(result.exception) and not (tmp_path / "o").exists()
    (tmp_path / "file").write_text("x")
    result = invoke("import-published", json_path, "--out", tmp_path / "file")
    assert "exists and is not a folder" in str(result.exception)


def _labelme_for_the_published_split(raw, directory):
    """One LabelMe file per published image: a polygon labelled with each focus asked there."""
    focuses = {}
    for item in raw:
        focuses.setdefault(Path(item["img_id"]).stem, []).append(item["focus"])
    directory.mkdir()
    for stem, phrases in focuses.items():
        shapes = [shape([[4 + 3 * k, 4], [20 + 3 * k, 4], [20 + 3 * k, 30]], label=phrase)
                  for k, phrase in enumerate(phrases)]
        (directory / f"{stem}.json").write_text(json.dumps(labelme(*shapes, height=48, width=64)))


@pytest.mark.skipif(not PUBLISHED.is_file(), reason="the published PRIST test split is not beside this checkout")
def test_the_published_split_imports_all_508_records_with_and_without_annotations(tmp_path):
    result = invoke("import-published", PUBLISHED, "--out", tmp_path / "plain")
    assert result.exit_code == 0, result.output
    assert "wrote 508 records on 169 images" in result.stdout and "skipped 0" in result.stdout
    raw = json.loads(PUBLISHED.read_text())
    _labelme_for_the_published_split(raw, tmp_path / "ann")
    result = invoke("import-published", PUBLISHED, "--out", tmp_path / "masked", "--annotations", tmp_path / "ann")
    assert result.exit_code == 0, result.output
    records = list(read_records(tmp_path / "masked" / "test.jsonl"))
    assert len(records) == 508 and all(r.targets[0].mask.area > 0 and r.image_size == (48, 64) for r in records)


# -- the training adapters ------------------------------------------------------------------------------
def test_the_prist_adapter_skips_unmatched_focuses_only_when_asked(tmp_path):
    from pixelagent.data.adapters.prist import PristDataset

    json_path, annotations = published(tmp_path, [entry(), entry(focus="cap")], {"img1": labelme(shape(SQUARE))})
    (tmp_path / "images").mkdir()
    with pytest.raises(NoMatchingShape, match=r"test\.json\[1\]: .*'cap'"):
        PristDataset(published_json=json_path, annotations_dir=annotations)
    dataset = PristDataset(published_json=json_path, annotations_dir=annotations, allow_missing_masks=True)
    assert len(dataset) == 1 and dataset.skipped_ids == ["prist-test-00001"]
    published(tmp_path, [entry(), entry(img_id="../x.jpg")], {"img1": labelme(shape(SQUARE))})
    with pytest.raises(ConfigError, match=r"test\.json\[1\]: img_id '\.\./x\.jpg' climbs out"):
        PristDataset(published_json=json_path, annotations_dir=annotations, allow_missing_masks=True)


def test_the_prist_adapter_refuses_canonical_records_leaving_the_folder(tmp_path):
    from pixelagent.data.adapters.prist import PristDataset

    (tmp_path / "train.jsonl").write_text(record_line() + "\n" + record_line(id="r2", image="../../x.png") + "\n")
    with pytest.raises(ConfigError, match=r"train\.jsonl:2: invalid record: image: .*climbs out"):
        PristDataset(tmp_path, "train", allow_missing_masks=True)


@pytest.mark.parametrize("image", ["../secret.jpg", "/etc/passwd"])
def test_vqa_and_captions_refuse_image_names_leaving_their_folder(tmp_path, image):
    from pixelagent.data.adapters import CaptionsDataset, VQADataset

    (tmp_path / "images").mkdir()
    (tmp_path / "vqa.json").write_text(json.dumps([{"id": 1, "image": image, "conversations": [
        {"from": "human", "value": "<image>\nWhat?"}, {"from": "gpt", "value": "A cat."}]}]))
    with pytest.raises(ConfigError, match=r"vqa\.json\[0\]\.image: image path"):
        VQADataset(tmp_path / "vqa.json", tmp_path / "images")
    (tmp_path / "caps.json").write_text(json.dumps({"images": [{"id": 1, "file_name": image}],
                                                    "annotations": [{"id": 2, "image_id": 1, "caption": "A cat."}]}))
    with pytest.raises(ConfigError, match=r"caps\.json: images\[0\]\.file_name: image path"):
        CaptionsDataset(tmp_path / "caps.json", tmp_path / "images")


def test_json_files_of_the_adapters_are_read_safely(tmp_path):
    from pixelagent.data.examples import read_json, read_yaml

    os.mkfifo(tmp_path / "fifo.json")
    with pytest.raises(ConfigError, match="the VQA file .*fifo.json is a FIFO"):
        read_json(tmp_path / "fifo.json", "VQA file")
    (tmp_path / "latin.yaml").write_bytes(b"name: caf\xe9\n")
    with pytest.raises(ConfigError, match="the class map .*latin.yaml is not UTF-8 text"):
        read_yaml(tmp_path / "latin.yaml", "class map")
