"""LLaVA-Instruct conversations and COCO captions → text-answer examples without masks."""

import json

import pytest
from PIL import Image

from pixelagent.data.adapters.captions import QUESTIONS, CaptionsDataset
from pixelagent.data.adapters.vqa import VQADataset
from pixelagent.errors import ConfigError, InputError

LLAVA = [
    {"id": "000000033471", "image": "000000033471.jpg", "conversations": [
        {"from": "human", "value": "<image>\nWhat are the colors of the bus in the image?"},
        {"from": "gpt", "value": "The bus in the image is white and red."},
        {"from": "human", "value": "What feature can be seen on the back of the bus?"},
        {"from": "gpt", "value": "The back of the bus features an advertisement."}]},
    {"id": 52846, "image": "000000052846.jpg", "conversations": [
        {"from": "human", "value": "Where is the cat positioned?\n<image>"},
        {"from": "gpt", "value": "On the bed."}]},
    {"id": "text-1", "conversations": [
        {"from": "human", "value": "Write a haiku."}, {"from": "gpt", "value": "Old pond..."}]},
]


def write_json(tmp_path, name, data):
    (tmp_path / name).write_text(json.dumps(data))
    return tmp_path / name


def test_llava_conversations_become_turns(tmp_path):
    (tmp_path / "coco").mkdir()
    dataset = VQADataset(write_json(tmp_path, "llava.json", LLAVA), tmp_path / "coco")
    assert len(dataset) == 3 and dataset.name == "vqa"
    bus, cat, text = dataset[0], dataset[1], dataset[2]
    assert bus.turns == [("What are the colors of the bus in the image?", "The bus in the image is white and red."),
                         ("What feature can be seen on the back of the bus?",
                          "The back of the bus features an advertisement.")]
    assert bus.image == tmp_path / "coco" / "000000033471.jpg" and bus.masks.shape == (0, 0, 0)
    assert cat.turns == [("Where is the cat positioned?", "On the bed.")] and cat.id == "52846"
    assert text.image is None and not text.has_image and text.id == "text-1"
    with pytest.raises(InputError, match="text-only"):
        text.load_image()


@pytest.mark.parametrize("conversations, problem", [
    ([{"from": "gpt", "value": "hi"}, {"from": "human", "value": "yo"}],
     r"\[1\]\.conversations\[0\]\.from: expected 'human', got 'gpt'"),
    ([{"from": "human", "value": "q"}], r"\[1\]\.conversations: expected a non-empty list of human/gpt pairs"),
    ([{"from": "human", "value": "q"}, {"from": "gpt", "value": 3}],
     r"\[1\]\.conversations\[1\]\.value: expected a string, got int"),
    ([{"from": "human", "value": "q"}, {"from": "gpt", "value": "It is [SEG]."}],
     r"\[1\]\.conversations\[1\]\.value: VQA text must not contain \[SEG\]"),
])
def test_bad_records_name_file_index_and_field(tmp_path, conversations, problem):
    data = [LLAVA[2], {"id": "bad", "conversations": conversations}]
    with pytest.raises(ConfigError, match=r"llava\.json" + problem):
        VQADataset(write_json(tmp_path, "llava.json", data))


def test_images_need_an_images_dir(tmp_path):
    path = write_json(tmp_path, "llava.json", LLAVA)
    with pytest.raises(ConfigError, match="2 records have an 'image'; pass images_dir"):
        VQADataset(path)
    (tmp_path / "coco").mkdir()
    with pytest.raises(ConfigError, match=r"2 image\(s\) missing"):
        VQADataset(path, tmp_path / "coco", check_images=True)
    assert len(VQADataset(write_json(tmp_path, "text.json", [LLAVA[2]]))) == 1
    (tmp_path / "broken.json").write_text('[{"id": 1,')
    with pytest.raises(ConfigError, match=r"VQA file .*broken\.json is not valid JSON"):
        VQADataset(tmp_path / "broken.json")


CAPTIONS = {
    "info": {}, "licenses": [],
    "images": [{"id": 179765, "file_name": "000000179765.jpg", "height": 8, "width": 10},
               {"id": 190236, "file_name": "000000190236.jpg", "height": 8, "width": 10}],
    "annotations": [{"image_id": 179765, "id": 38, "caption": "A black Honda motorcycle parked in front of a garage."},
                    {"image_id": 179765, "id": 182, "caption": "A Honda motorcycle parked in a grass driveway "},
                    {"image_id": 190236, "id": 401, "caption": "An office cubicle with four different monitors."}],
}


def test_one_example_per_caption(tmp_path):
    images = tmp_path / "train2017"
    images.mkdir()
    for image in CAPTIONS["images"]:
        Image.new("RGB", (10, 8)).save(images / image["file_name"])
    dataset = CaptionsDataset(write_json(tmp_path, "captions_train2017.json", CAPTIONS), images,
                              seed=4, check_images=True)
    assert len(dataset) == 3 and dataset.name == "captions"
    examples = [dataset[i] for i in range(3)]
    assert [e.id for e in examples] == ["38", "182", "401"]
    assert examples[1].turns[0][1] == "A Honda motorcycle parked in a grass driveway"
    assert all(len(e.turns) == 1 and e.turns[0][0] in QUESTIONS and e.masks.shape[0] == 0 for e in examples)
    assert examples[2].image == images / "000000190236.jpg" and examples[2].load_image().shape == (8, 10, 3)
    again = CaptionsDataset(tmp_path / "captions_train2017.json", images, seed=4)
    assert [again[i].turns for i in (2, 0, 1)] == [examples[i].turns for i in (2, 0, 1)]
    many = [CaptionsDataset(tmp_path / "captions_train2017.json", images, seed=s)[0].turns for s in range(10)]
    assert len({t[0][0] for t in many}) > 1


def test_bad_caption_files(tmp_path):
    (tmp_path / "img").mkdir()
    bad = dict(CAPTIONS, annotations=[{"image_id": 5, "id": 1, "caption": "x"}])
    with pytest.raises(ConfigError, match=r"caps\.json: annotations\[0\]: image_id 5 is not among"):
        CaptionsDataset(write_json(tmp_path, "caps.json", bad), tmp_path / "img")
    bad = dict(CAPTIONS, annotations=[{"image_id": 179765, "id": 1}])
    with pytest.raises(ConfigError, match=r"annotations\[0\]: needs a non-empty 'caption'"):
        CaptionsDataset(write_json(tmp_path, "caps.json", bad), tmp_path / "img")
    with pytest.raises(ConfigError, match="expected a COCO captions file"):
        CaptionsDataset(write_json(tmp_path, "caps.json", []), tmp_path / "img")
    with pytest.raises(ConfigError, match="images directory .*nowhere does not exist"):
        CaptionsDataset(write_json(tmp_path, "caps.json", CAPTIONS), tmp_path / "nowhere")
