"""The published PRIST format and the canonical JSON Lines format."""

import json
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as coco

from pixelagent.data.prist import export_published, load_published, rasterize
from pixelagent.data.records import (Message, PristRecord, TargetAnnotation, load_split, read_records,
                                     write_records)
from pixelagent.errors import ConfigError
from pixelagent.mask import Mask

PUBLISHED = Path(__file__).resolve().parents[3] / "shared" / "prist" / "test.json"


@pytest.mark.skipif(not PUBLISHED.is_file(), reason="the published PRIST test split is not beside this checkout")
def test_published_test_split_loads_unchanged():
    raw = json.loads(PUBLISHED.read_text())
    records = load_published(PUBLISHED)
    assert len(records) == 508 and len({r.image for r in records}) == 169
    assert {len(r.messages) for r in records} == {6, 8, 10}
    for entry, record in zip(raw, records):
        assert record.focus == entry["focus"] and record.image == f"images/{entry['img_id']}"
        assert [m.text for m in record.messages[:-1]] == [d["value"] for d in entry["dialogue"][:-1]]
        assert record.messages[-1].text == entry["dialogue"][-1]["value"].replace("[SEG]", f"[OBJ]{entry['focus']}[SEG]")
        assert record.seg_count == 1 and record.targets[0].mask is None
    plain = load_published(PUBLISHED, focus_markup=False)
    assert [m.text for m in plain[0].messages] == [d["value"] for d in raw[0]["dialogue"]]


def write_published(tmp_path, entries, labelme):
    (tmp_path / "test.json").write_text(json.dumps(entries))
    annotations = tmp_path / "ann"
    annotations.mkdir()
    for stem, content in labelme.items():
        (annotations / f"{stem}.json").write_text(json.dumps(content))
    return tmp_path / "test.json", annotations


DIALOGUE = [{"from": "human", "value": "What is on the bottle?"}, {"from": "gpt", "value": "A red label."},
            {"from": "human", "value": "Please segment it."}, {"from": "gpt", "value": "Sure, it is [SEG]."}]
LABEL = [[10.0, 12.0], [50.0, 12.0], [50.0, 30.0], [10.0, 30.0]]
LONGER = [[60.0, 40.0], [90.0, 40.0], [75.0, 70.0]]


def small_dataset(tmp_path):
    labelme = {"img1": {"imageHeight": 80, "imageWidth": 100, "shapes": [
        {"label": "Red Label", "points": LABEL}, {"label": "red label corner", "points": LONGER},
        {"label": "bottle", "points": [[0, 0], [5, 0], [5, 5]]}]}}
    return write_published(tmp_path, [{"img_id": "img1.jpg", "dialogue": DIALOGUE, "focus": "red label"}], labelme)


def test_labelme_polygons_fill_the_focus_mask(tmp_path):
    json_path, annotations = small_dataset(tmp_path)
    (contains,) = load_published(json_path, annotations_dir=annotations)
    (exact,) = load_published(json_path, annotations_dir=annotations, label_match="exact")
    assert contains.image_size == (80, 100) and contains.messages[-1].text == "Sure, it is [OBJ]red label[SEG]."
    assert len(contains.targets[0].polygons) == 2 and len(exact.targets[0].polygons) == 1
    # cross-check with pycocotools' own polygon rasteriser
    reference = coco.decode(coco.merge(coco.frPyObjects([sum(LABEL, [])], 80, 100))).astype(bool)
    assert exact.targets[0].mask.iou(Mask(reference)) > 0.9
    assert contains.targets[0].mask.area > exact.targets[0].mask.area


@pytest.mark.parametrize("entry, problem", [
    ({"img_id": "a.jpg", "dialogue": DIALOGUE}, r"\[0\]: missing field 'focus'"),
    ({"img_id": "a.jpg", "dialogue": "hi", "focus": "x"}, r"\[0\]: field 'dialogue' should be a list"),
    ({"img_id": "a.jpg", "dialogue": [{"from": "bot", "value": "x"}], "focus": "x"}, r"dialogue\[0\]: field 'from'"),
])
def test_malformed_published_records_name_file_index_and_field(tmp_path, entry, problem):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps([entry]))
    with pytest.raises(ConfigError, match=problem) as info:
        load_published(path)
    assert "bad.json" in str(info.value)


def test_missing_labelme_file_is_named(tmp_path):
    json_path, _ = small_dataset(tmp_path)
    with pytest.raises(ConfigError, match="LabelMe file .*img1.json"):
        load_published(json_path, annotations_dir=tmp_path / "nowhere")


def record_with_polygons():
    polygon = [(10.0, 12.0), (50.0, 12.0), (50.0, 30.0), (10.0, 30.0)]
    return PristRecord(
        id="r1", image="images/img1.png", image_size=(80, 100), focus="the red label", split="test",
        messages=[Message(role="user", text="What is it?"), Message(role="assistant", text="A bottle."),
                  Message(role="user", text="Segment its label."),
                  Message(role="assistant", text="Sure, it is [OBJ]the red label[SEG].")],
        targets=[TargetAnnotation(phrase="the red label", mask=rasterize([polygon], (80, 100)), polygons=[polygon])])


def test_canonical_to_published_and_back(tmp_path):
    record = record_with_polygons()
    assert export_published([record], tmp_path / "out.json", tmp_path / "labelme") == 1
    published = json.loads((tmp_path / "out.json").read_text())
    assert published[0]["dialogue"][-1] == {"from": "gpt", "value": "Sure, it is [SEG]."}
    (back,) = load_published(tmp_path / "out.json", annotations_dir=tmp_path / "labelme", label_match="exact")
    assert [m.text for m in back.messages] == [m.text for m in record.messages]
    assert back.targets[0].mask == record.targets[0].mask and back.image_size == record.image_size


def test_export_needs_polygons(tmp_path):
    record = record_with_polygons()
    record = record.model_copy(update={"targets": [TargetAnnotation(phrase="the red label", mask=record.targets[0].mask)]})
    with pytest.raises(ConfigError, match="no polygons"):
        export_published([record], tmp_path / "o.json", tmp_path / "l")


def test_jsonl_round_trip_and_errors_name_file_line_and_field(tmp_path):
    record = record_with_polygons()
    write_records(tmp_path / "test.jsonl", [record, record.model_copy(update={"id": "r2"})])
    loaded = load_split(tmp_path, "test")
    assert [r.id for r in loaded] == ["r1", "r2"] and loaded[0].targets[0].mask == record.targets[0].mask
    lines = (tmp_path / "test.jsonl").read_text().splitlines()
    broken = json.loads(lines[1])
    broken["messages"][0]["role"] = "robot"
    (tmp_path / "test.jsonl").write_text(lines[0] + "\n" + json.dumps(broken) + "\n")
    with pytest.raises(ConfigError, match=r"test.jsonl:2: invalid record: messages.0.role"):
        list(read_records(tmp_path / "test.jsonl"))
    with pytest.raises(ConfigError, match="no val split"):
        load_split(tmp_path, "val")


def test_records_check_their_own_consistency():
    record = record_with_polygons()
    data = record.model_dump()
    data["targets"] = data["targets"] * 2
    with pytest.raises(ValueError, match="1 \\[SEG\\] tokens in the answers but 2 targets"):
        PristRecord.model_validate(data)
    bad_roles = record.model_dump()
    bad_roles["messages"] = bad_roles["messages"][1:]
    with pytest.raises(ValueError, match="alternate"):
        PristRecord.model_validate(bad_roles)
    assert record.turns[1] == ("Segment its label.", "Sure, it is [OBJ]the red label[SEG].")
    assert np.asarray(record.targets[0].mask.array).sum() == record.targets[0].mask.area


@pytest.mark.skipif(not PUBLISHED.is_file(), reason="the published PRIST test split is not beside this checkout")
def test_the_published_split_exports_byte_identical(tmp_path):
    write_records(tmp_path / "test.jsonl", load_published(PUBLISHED))
    assert export_published(load_split(tmp_path, "test"), tmp_path / "out.json", tmp_path / "labelme") == 508
    assert (tmp_path / "out.json").read_bytes() == PUBLISHED.read_bytes()
    assert not (tmp_path / "labelme").exists()  # no masks, no polygons: no LabelMe files


def test_the_cli_exports_the_published_layout(tmp_path):
    from typer.testing import CliRunner

    from pixelagent.data.cli import data_app

    record = record_with_polygons()
    write_records(tmp_path / "data" / "test.jsonl", [record])
    result = CliRunner().invoke(data_app, ["export-published", str(tmp_path / "data"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    text = (tmp_path / "o" / "test.json").read_text()
    assert text.startswith('[\n    {\n        "img_id": "img1.png",\n        "dialogue": [') and text.endswith("}\n]")
    assert list(json.loads(text)[0]) == ["img_id", "dialogue", "focus"]
    assert (tmp_path / "o" / "annotations" / "img1.json").is_file()
