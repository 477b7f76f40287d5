"""Semantic-segmentation label PNGs (ADE20K / COCO-Stuff / Mapillary) → dialogues with masks."""

import json

import numpy as np
import pytest
import yaml
from PIL import Image

from pixelagent.data.adapters.semantic import ANSWERS, QUESTIONS, SemanticSegDataset
from pixelagent.errors import ConfigError
from pixelagent.markup import find_focus_spans

CLASSES = ["unlabeled", "wall", "sky", "tree", "person"]


def label_map(seed, shape=(12, 16), values=(0, 1, 2, 3, 4, 255)):
    return np.random.default_rng(seed).choice(np.array(values, dtype=np.uint8), size=shape)


def write_dataset(tmp_path, labels, *, mode="L", class_map=CLASSES, map_name="classes.json", palette=None):
    images, annotations = tmp_path / "images", tmp_path / "labels"
    images.mkdir(exist_ok=True)
    annotations.mkdir(exist_ok=True)
    for stem, label in labels.items():
        Image.new("RGB", (label.shape[1], label.shape[0]), (90, 120, 30)).save(images / f"{stem}.jpg")
        picture = Image.fromarray(label)
        if mode == "P":
            picture.putpalette(palette)  # L + palette → P with the indices untouched
        picture.save(annotations / f"{stem}.png")
    path = tmp_path / map_name
    text = json.dumps(class_map) if map_name.endswith(".json") else class_map
    path.write_text(text if isinstance(text, str) else yaml.safe_dump(text))
    return images, annotations, path


def test_examples_ask_about_present_classes_with_exact_masks(tmp_path):
    labels = {f"img{k}": label_map(k) for k in range(4)}
    dataset = SemanticSegDataset(*write_dataset(tmp_path, labels), max_classes=3, seed=7)
    assert len(dataset) == 4 and dataset.name == "semantic"
    for i, stem in enumerate(sorted(labels)):
        example = dataset[i]
        assert example.id == stem and example.image.name == f"{stem}.jpg" and example.source == "semantic"
        assert len(example.turns) == 3 and example.masks.shape == (3, 12, 16)
        for (question, answer), mask in zip(example.turns, example.masks):
            (span,) = find_focus_spans(answer)
            index = CLASSES.index(span.phrase)
            assert index not in (0, 255) and span.phrase in question  # "unlabeled" is never asked
            assert np.array_equal(mask, labels[stem] == index)
            assert any(question == q.format(name=span.phrase) for q in QUESTIONS)
            assert any(answer == a.format(focus=f"[OBJ]{span.phrase}[SEG]") for a in ANSWERS)
        assert len({p for p in (find_focus_spans(a)[0].phrase for _, a in example.turns)}) == 3
        assert example.load_image().shape == (12, 16, 3)


def test_same_arguments_same_examples_and_seed_changes_them(tmp_path):
    files = write_dataset(tmp_path, {f"img{k}": label_map(k) for k in range(6)})
    first, again = SemanticSegDataset(*files, seed=1), SemanticSegDataset(*files, seed=1)
    other = SemanticSegDataset(*files, seed=2)
    for i in reversed(range(6)):  # any order: nothing depends on earlier calls
        assert first[i].turns == again[i].turns and np.array_equal(first[i].masks, again[i].masks)
    assert [first[i].turns for i in range(6)] != [other[i].turns for i in range(6)]
    assert first[-1].id == first[5].id
    with pytest.raises(IndexError):
        first[6]


def test_few_classes_and_ignore_classes(tmp_path):
    label = np.full((8, 8), 1, np.uint8)
    label[:4] = 2
    dataset = SemanticSegDataset(*write_dataset(tmp_path, {"a": label}), ignore_classes=["sky"])
    example = dataset[0]
    assert [find_focus_spans(a)[0].phrase for _, a in example.turns] == ["wall"]
    assert example.masks.shape == (1, 8, 8) and example.masks[0].sum() == 32


def test_image_without_classes_falls_through_to_the_next(tmp_path):
    empty, full = np.full((6, 6), 255, np.uint8), np.full((6, 6), 3, np.uint8)
    dataset = SemanticSegDataset(*write_dataset(tmp_path, {"a": empty, "b": full}))
    assert dataset[0].id == "b" and dataset[1].id == "b"
    only_empty = tmp_path / "x"
    only_empty.mkdir()
    with pytest.raises(ConfigError, match="no label image"):
        SemanticSegDataset(*write_dataset(only_empty, {"a": empty}))[0]


def test_palette_labels_use_the_palette_index(tmp_path):
    label = np.array([[1, 1, 2], [3, 3, 4]], np.uint8)
    palette = [v for k in range(256) for v in (k * 7 % 256, k * 13 % 256, k * 29 % 256)]
    files = write_dataset(tmp_path, {"m": label}, mode="P", palette=palette)
    with Image.open(files[1] / "m.png") as written:
        assert written.mode == "P"  # a Mapillary-style palette PNG, not grey
    example = SemanticSegDataset(*files, max_classes=4)[0]
    for (_, answer), mask in zip(example.turns, example.masks):
        assert np.array_equal(mask, label == CLASSES.index(find_focus_spans(answer)[0].phrase))


def test_rgb_labels_with_a_mapillary_config(tmp_path):
    config = {"labels": [{"name": "void--unlabeled", "readable": "Unlabeled", "color": [0, 0, 0]},
                         {"name": "construction--road", "readable": "Road", "color": [128, 64, 128]},
                         {"name": "object--car", "readable": "Car", "color": [0, 0, 142]}]}
    rgb = np.zeros((4, 5, 3), np.uint8)
    rgb[:2] = (128, 64, 128)
    rgb[3, :3] = (0, 0, 142)
    files = write_dataset(tmp_path, {"street": rgb}, class_map=config)
    example = SemanticSegDataset(*files, seed=3)[0]
    masks = {find_focus_spans(a)[0].phrase: m for (_, a), m in zip(example.turns, example.masks)}
    assert set(masks) == {"road", "car"}
    assert masks["road"].sum() == 10 and masks["car"].sum() == 3 and masks["car"][3, :3].all()
    rgb[0, 0] = (1, 2, 3)
    Image.fromarray(rgb).save(files[1] / "street.png")
    with pytest.raises(ConfigError, match=r"street.png: colours not in the class map: \(1, 2, 3\)"):
        SemanticSegDataset(*files)[0]


def test_ade20k_reduce_zero_label(tmp_path):
    label = np.array([[0, 1, 2], [150, 150, 0]], np.uint8)  # raw ADE: 0 = other, 1..150 classes
    names = [f"class{k}" for k in range(150)]
    dataset = SemanticSegDataset(*write_dataset(tmp_path, {"ADE_train_1": label}, class_map=names),
                                 reduce_zero_label=True, max_classes=5)
    phrases = {find_focus_spans(a)[0].phrase for _, a in dataset[0].turns}
    assert phrases == {"class0", "class1", "class149"}
    with pytest.raises(ConfigError, match=r"\[150\] are not in the class map.*reduce_zero_label"):
        SemanticSegDataset(*write_dataset(tmp_path, {"ADE_train_1": label}, class_map=names), max_classes=5)[0]


@pytest.mark.parametrize("name, text", [
    ("classes.yaml", "0: unlabeled\n1: wall\n2: sky\n3: tree\n4: person\n"),
    ("labels.txt", "0: unlabeled\n1: wall\n2: sky\n3: tree\n4: person\n"),
    ("names.txt", "unlabeled\nwall\nsky\ntree\nperson\n"),
    ("classes.yml", "- unlabeled\n- wall\n- sky\n- tree\n- person\n"),
])
def test_class_map_forms(tmp_path, name, text):
    dataset = SemanticSegDataset(*write_dataset(tmp_path, {"a": label_map(0)}, class_map=text, map_name=name))
    assert dataset.classes == dict(enumerate(CLASSES))


def test_problems_name_the_file(tmp_path):
    images, labels, class_map = write_dataset(tmp_path, {"a": label_map(0), "b": label_map(1)})
    (images / "b.jpg").unlink()
    with pytest.raises(ConfigError, match=r"1 label image\(s\) in .*labels have no image.*b\.png"):
        SemanticSegDataset(images, labels, class_map)
    Image.new("RGB", (5, 5)).save(images / "b.jpg")
    with pytest.raises(ConfigError, match=r"b\.png is 12x16 .*b\.jpg is 5x5"):
        SemanticSegDataset(images, labels, class_map)[1]
    class_map.write_text("{not json")
    with pytest.raises(ConfigError, match=r"classes\.json is not valid JSON"):
        SemanticSegDataset(images, labels, class_map)
    class_map.write_text(json.dumps(["wall", ""]))
    with pytest.raises(ConfigError, match=r"class 1: name must be a non-empty string"):
        SemanticSegDataset(images, labels, class_map)
    class_map.write_text(json.dumps(CLASSES))
    with pytest.raises(ConfigError, match="labels directory .*missing does not exist"):
        SemanticSegDataset(images, tmp_path / "missing", class_map)
    with pytest.raises(ConfigError, match="max_classes"):
        SemanticSegDataset(images, labels, class_map, max_classes=0)


def test_masks_follow_stored_pixels_not_exif_rotation(tmp_path):
    label = np.zeros((6, 10), np.uint8)
    label[:, :3] = 1
    images, labels, class_map = write_dataset(tmp_path, {"a": label})
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display": COCO/ADE masks ignore it
    Image.new("RGB", (10, 6), (1, 2, 3)).save(images / "a.jpg", exif=exif)
    example = SemanticSegDataset(images, labels, class_map)[0]
    assert example.load_image().shape[:2] == example.masks.shape[1:] == (6, 10)
