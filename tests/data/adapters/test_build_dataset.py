"""build_dataset: config dicts validated by a pydantic model per type, every problem reported."""

import json

import numpy as np
import pytest
from PIL import Image

from pixelagent.data.adapters import (CaptionsDataset, SemanticSegDataset, VQADataset, build_dataset,
                                      build_datasets)
from pixelagent.data.examples import Dataset
from pixelagent.data.mixing import MixedDataset, ratios_from_config
from pixelagent.errors import ConfigError


def semantic_files(root):
    (root / "img").mkdir(parents=True)
    (root / "lab").mkdir()
    Image.new("RGB", (6, 4)).save(root / "img" / "a.jpg")
    Image.fromarray(np.array([[1, 1, 2, 2, 0, 0]] * 4, np.uint8)).save(root / "lab" / "a.png")
    (root / "classes.json").write_text(json.dumps(["other", "road", "car"]))


def test_builds_each_type_with_relative_paths(tmp_path):
    semantic_files(tmp_path)
    spec = {"type": "semantic", "images_dir": "img", "labels_dir": "lab", "class_map": "classes.json",
            "max_classes": 1, "seed": 3, "name": "ade"}
    dataset = build_dataset(spec, base_dir=tmp_path)
    assert isinstance(dataset, SemanticSegDataset) and isinstance(dataset, Dataset)
    assert dataset.name == "ade" and len(dataset[0].turns) == 1 and dataset.max_classes == 1
    (tmp_path / "vqa.json").write_text(json.dumps([{"id": 1, "conversations": [
        {"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]}]))
    vqa = build_dataset({"type": "vqa", "json_path": str(tmp_path / "vqa.json")})
    assert isinstance(vqa, VQADataset) and vqa.name == "vqa" and vqa[0].turns == [("hi", "hello")]


def test_every_problem_is_reported_at_once(tmp_path):
    spec = {"type": "semantic", "images_dir": str(tmp_path / "nope"), "class_map": 5, "max_classes": 0,
            "colour": "red"}
    with pytest.raises(ConfigError) as info:
        build_dataset(spec)
    message = str(info.value)
    for fragment in ("5 problem(s)", "images_dir: Value error", "nope is not an existing directory",
                     "labels_dir: Field required", "class_map",
                     "max_classes: Input should be greater than or equal to 1",
                     "colour: Extra inputs are not permitted"):
        assert fragment in message


@pytest.mark.parametrize("spec, problem", [
    ({"type": "segmentation"}, "does not match any of the expected tags: 'semantic', 'refer', 'vqa'"),
    ({"json_path": "x"}, "Unable to extract tag using discriminator 'type'"),
    ({"type": "refer", "refs": "r.p", "instances": "i.json", "images_dir": ".", "split": "testC"},
     "split: Input should be 'train', 'val', 'test', 'testA' or 'testB'"),
])
def test_unknown_types_and_values(tmp_path, spec, problem):
    with pytest.raises(ConfigError, match=problem):
        build_dataset(spec, base_dir=tmp_path)


def test_build_datasets_reports_all_sources_then_mixes(tmp_path):
    semantic_files(tmp_path)
    captions = {"images": [{"id": 1, "file_name": "a.jpg"}],
                "annotations": [{"id": k, "image_id": 1, "caption": f"caption {k}"} for k in range(3)]}
    (tmp_path / "caps.json").write_text(json.dumps(captions))
    specs = {"semseg": {"type": "semantic", "images_dir": "img", "labels_dir": "lab", "class_map": "classes.json"},
             "caption": {"type": "captions", "json_path": "caps.json", "images_dir": "img"}}
    with pytest.raises(ConfigError, match=r"dataset 'semseg'.*labels_dir.*dataset 'caption'.*json_path"):
        build_datasets({"semseg": {**specs["semseg"], "labels_dir": "x"},
                        "caption": {**specs["caption"], "json_path": "y.json"}}, base_dir=tmp_path)
    datasets = build_datasets(specs, base_dir=tmp_path)
    assert isinstance(datasets["caption"], CaptionsDataset) and datasets["semseg"].name == "semseg"
    mixed = MixedDataset(datasets, ratios_from_config("3:1", ["semseg", "caption"]), seed=0)
    sources = [mixed[s].source for s in range(8)]
    assert sources.count("semseg") == 6 and sources.count("caption") == 2
