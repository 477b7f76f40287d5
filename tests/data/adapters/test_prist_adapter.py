"""PRIST (canonical JSON Lines or published test.json + LabelMe) → examples with target masks."""

import json

import numpy as np
import pytest
from PIL import Image

from pixelagent.data.adapters.prist import PristDataset
from pixelagent.data.records import Message, PristRecord, TargetAnnotation, write_records
from pixelagent.errors import ConfigError
from pixelagent.mask import Mask

H, W = 24, 32


def box(y0, y1, x0, x1):
    array = np.zeros((H, W), bool)
    array[y0:y1, x0:x1] = True
    return array


def record(record_id, masks, phrases=("the bottle", "its label")):
    answers = ["It is [OBJ]" + phrases[0] + "[SEG].", "Sure, [OBJ]" + phrases[1] + "[SEG]."]
    messages = [m for k, a in enumerate(answers) for m in (Message(role="user", text=f"question {k}?"),
                                                          Message(role="assistant", text=a))]
    targets = [TargetAnnotation(phrase=p, mask=None if m is None else Mask(m)) for p, m in zip(phrases, masks)]
    return PristRecord(id=record_id, image=f"images/{record_id}.png", image_size=(H, W), messages=messages,
                       focus=phrases[1], targets=targets, split="train")


def canonical(tmp_path, records):
    (tmp_path / "images").mkdir()
    for r in records:
        Image.new("RGB", (W, H), (10, 20, 30)).save(tmp_path / r.image)
    write_records(tmp_path / "train.jsonl", records)
    return tmp_path


def test_canonical_records_give_turns_and_one_mask_per_seg(tmp_path):
    masks = [box(2, 20, 4, 28), box(5, 9, 10, 20)]
    directory = canonical(tmp_path, [record("a", masks), record("b", masks[::-1])])
    dataset = PristDataset(directory, "train")
    assert len(dataset) == 2 and dataset.skipped == 0 and dataset.name == "prist"
    example = dataset[0]
    assert example.id == "a" and example.image == directory / "images" / "a.png"
    assert example.turns == [("question 0?", "It is [OBJ]the bottle[SEG]."),
                             ("question 1?", "Sure, [OBJ]its label[SEG].")]
    assert example.masks.shape == (2, H, W) and np.array_equal(example.masks[0], masks[0])
    assert np.array_equal(dataset[1].masks[0], masks[1]) and example.load_image().shape == (H, W, 3)
    with pytest.raises(ConfigError, match="no val split"):
        PristDataset(directory, "val")


def test_missing_masks_are_refused_or_skipped_and_counted(tmp_path):
    good = [box(2, 20, 4, 28), box(5, 9, 10, 20)]
    records = [record("a", good), record("b", [good[0], None]), record("c", [good[0], np.zeros((H, W), bool)])]
    directory = canonical(tmp_path, records)
    with pytest.raises(ConfigError, match=r"train\.jsonl: record b has no mask for 'its label'; "
                                          "pass allow_missing_masks=True"):
        PristDataset(directory, "train")
    dataset = PristDataset(directory, "train", allow_missing_masks=True)
    assert len(dataset) == 1 and dataset[0].id == "a"
    assert dataset.skipped == 2 and dataset.skipped_ids == ["b", "c"]


def published(tmp_path, labelme=True):
    dialogue = [{"from": "human", "value": "What is on the bottle?"}, {"from": "gpt", "value": "A red label."},
                {"from": "human", "value": "Please segment it."}, {"from": "gpt", "value": "Sure, it is [SEG]."}]
    entries = [{"img_id": "img1.jpg", "dialogue": dialogue, "focus": "red label"}]
    (tmp_path / "test.json").write_text(json.dumps(entries))
    (tmp_path / "images").mkdir()
    Image.new("RGB", (W, H)).save(tmp_path / "images" / "img1.jpg")
    (tmp_path / "ann").mkdir()
    if labelme:
        shapes = [{"label": "red label", "points": [[4, 2], [20, 2], [20, 10], [4, 10]], "shape_type": "polygon"}]
        (tmp_path / "ann" / "img1.json").write_text(json.dumps(
            {"imageHeight": H, "imageWidth": W, "shapes": shapes}))
    return tmp_path / "test.json", tmp_path / "ann"


def test_published_json_with_labelme_masks(tmp_path):
    json_path, annotations = published(tmp_path)
    dataset = PristDataset(published_json=json_path, annotations_dir=annotations)
    (example,) = [dataset[0]]
    assert example.turns[-1] == ("Please segment it.", "Sure, it is [OBJ]red label[SEG].")
    assert example.image == tmp_path / "images" / "img1.jpg" and example.id == "prist-test-00000"
    mask = example.masks[0]
    assert mask.shape == (H, W) and mask[3:10, 5:20].all() and not mask[12:].any()


def test_published_json_without_masks(tmp_path):
    json_path, _ = published(tmp_path, labelme=False)
    with pytest.raises(ConfigError, match="record prist-test-00000 has no mask for 'red label'"):
        PristDataset(published_json=json_path)
    with pytest.raises(ConfigError, match=r"test\.json: no record with target masks \(1 skipped\)"):
        PristDataset(published_json=json_path, allow_missing_masks=True)
    with pytest.raises(ConfigError, match="either dataset_dir .* or published_json"):
        PristDataset(tmp_path, published_json=json_path)
    with pytest.raises(ConfigError, match="LabelMe annotations directory .*gone does not exist"):
        PristDataset(published_json=json_path, annotations_dir=tmp_path / "gone")
