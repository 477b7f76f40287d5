"""refCOCO-style refs pickles + COCO instances → referring dialogues with masks."""

import json
import os
import pickle

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as coco_mask

from pixelagent.data.adapters.refer import ANSWERS, QUESTIONS, ReferDataset, load_refs
from pixelagent.errors import ConfigError
from pixelagent.markup import find_focus_spans

H, W = 20, 30


def rle_mask():
    mask = np.zeros((H, W), np.uint8)
    mask[5:15, 20:28] = 1
    return mask.astype(bool)


def sentences(*texts):
    return [{"sent": t, "raw": t.capitalize() + ".", "tokens": t.split(), "sent_id": k} for k, t in enumerate(texts)]


def write_refer(tmp_path, refs=None, protocol=2):
    images = tmp_path / "train2014"
    images.mkdir()
    for image_id in (1, 2):
        Image.new("RGB", (W, H)).save(images / f"COCO_train2014_{image_id:012d}.jpg")
    rle = coco_mask.encode(np.asfortranarray(rle_mask().astype(np.uint8)))
    instances = {
        "images": [{"id": k, "file_name": f"COCO_train2014_{k:012d}.jpg", "height": H, "width": W} for k in (1, 2)],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 1, "segmentation": [[2, 2, 12, 2, 12, 8, 2, 8]]},
            {"id": 11, "image_id": 2, "category_id": 3, "iscrowd": 1,
             "segmentation": {"size": [H, W], "counts": rle["counts"].decode("ascii")}},
        ],
        "categories": [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}],
    }
    if refs is None:
        refs = [
            {"ref_id": 100, "ann_id": 10, "image_id": 1, "split": "train", "category_id": 1,
             "file_name": "COCO_train2014_000000000001_10.jpg",
             "sentences": sentences("man in red", "left guy", "person standing", "the tall one")},
            {"ref_id": 101, "ann_id": 11, "image_id": 2, "split": "train", "category_id": 3,
             "file_name": "COCO_train2014_000000000002_11.jpg", "sentences": sentences("blue car")},
            {"ref_id": 102, "ann_id": 11, "image_id": 2, "split": "testA", "category_id": 3,
             "file_name": "COCO_train2014_000000000002_11.jpg", "sentences": sentences("the car", "a car")},
        ]
    (tmp_path / "refs(unc).p").write_bytes(pickle.dumps(refs, protocol=protocol))
    (tmp_path / "instances.json").write_text(json.dumps(instances))
    return tmp_path / "refs(unc).p", tmp_path / "instances.json", images


def test_refs_become_turns_with_the_annotation_mask(tmp_path):
    dataset = ReferDataset(*write_refer(tmp_path), seed=5)
    assert len(dataset) == 2 and dataset.name == "refer"
    first, second = dataset[0], dataset[1]
    assert first.id == "100" and len(first.turns) == 3 and first.masks.shape == (3, H, W)
    phrases = [find_focus_spans(a)[0].phrase for _, a in first.turns]
    assert len(set(phrases)) == 3 and set(phrases) <= {"man in red", "left guy", "person standing", "the tall one"}
    for (question, answer), phrase in zip(first.turns, phrases):
        assert any(question == q.format(sent=phrase) for q in QUESTIONS)
        assert any(answer == a.format(focus=f"[OBJ]{phrase}[SEG]") for a in ANSWERS)
    polygon = first.masks[0]
    assert (first.masks == polygon).all() and polygon[3:8, 3:12].all() and not polygon[10:].any()
    assert not polygon[:, 14:].any() and 50 <= polygon.sum() <= 80
    assert second.turns and len(second.turns) == 1 and np.array_equal(second.masks[0], rle_mask())
    # the ref's own file_name carries an "_<ann_id>" suffix; the real file comes from instances.json
    assert first.image.name == "COCO_train2014_000000000001.jpg"
    assert first.load_image().shape == (H, W, 3) and first.exif_orientation is False


def test_split_filter_and_determinism(tmp_path):
    files = write_refer(tmp_path)
    test_a = ReferDataset(*files, split="testA", max_sentences=1)
    assert len(test_a) == 1 and test_a[0].id == "102" and len(test_a[0].turns) == 1
    one, two = ReferDataset(*files, seed=3), ReferDataset(*files, seed=3)
    assert one[1].turns == two[1].turns and one[0].turns == two[0].turns
    seeds = {tuple(ReferDataset(*files, seed=s)[0].turns) for s in range(8)}
    assert len(seeds) > 1
    with pytest.raises(ConfigError, match="no refs in split 'val'"):
        ReferDataset(*files, split="val")
    with pytest.raises(ConfigError, match="unknown refer split 'testC'"):
        ReferDataset(*files, split="testC")


def test_python3_and_python2_pickles_load(tmp_path):
    refs, *_ = write_refer(tmp_path, protocol=0)
    assert [r["ref_id"] for r in load_refs(refs)] == [100, 101, 102]
    # As cPickle wrote them under Python 2: byte strings (SHORT_BINSTRING / STRING), UTF-8 inside.
    refs.write_bytes(b"\x80\x02]q\x00}q\x01(U\x05splitq\x02U\x05trainq\x03U\x04sentq\x04"
                     b"U\x0bman in r\xc3\xa9dq\x05ua.")
    assert load_refs(refs) == [{"split": "train", "sent": "man in r\u00e9d"}]
    refs.write_bytes(b"(lp0\n(dp1\nS'sent'\np2\nS'left guy'\np3\nsS'ann_id'\np4\nI10\nsa.")
    assert load_refs(refs) == [{"sent": "left guy", "ann_id": 10}]


class Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("protocol", [0, 2, 5])
def test_a_malicious_pickle_is_refused_without_running(tmp_path, protocol):
    marker = tmp_path / "pwned"
    payload = [{"ref_id": 1, "sentences": Exploit(marker)}]
    path = tmp_path / "refs(unc).p"
    path.write_bytes(pickle.dumps(payload, protocol=protocol))
    with pytest.raises(ConfigError, match=r"refs\(unc\)\.p is not a plain refs pickle: refusing to load the global"):
        load_refs(path)
    assert not marker.exists()


def test_bad_inputs_name_the_file(tmp_path):
    refs = [{"ref_id": 7, "ann_id": 99, "image_id": 1, "split": "train", "sentences": sentences("x")}]
    files = write_refer(tmp_path, refs=refs)
    with pytest.raises(ConfigError, match=r"refs\(unc\)\.p: ref 7: ann_id 99 is not in .*instances\.json"):
        ReferDataset(*files)
    files[0].write_bytes(pickle.dumps([{"ref_id": 8, "ann_id": 10, "image_id": 1, "split": "train",
                                        "sentences": []}]))
    with pytest.raises(ConfigError, match="ref 8: 'sentences' must be a non-empty list"):
        ReferDataset(*files)
    files[0].write_bytes(b"not a pickle")
    with pytest.raises(ConfigError, match="not a plain refs pickle"):
        ReferDataset(*files)
    files[1].write_text(json.dumps({"images": []}))
    with pytest.raises(ConfigError, match=r"instances\.json: expected a COCO instances file"):
        ReferDataset(*files)
    with pytest.raises(ConfigError, match="COCO instances file .*nope.json does not exist"):
        ReferDataset(files[0], tmp_path / "nope.json", files[2])


def test_check_images_reports_missing_files(tmp_path):
    files = write_refer(tmp_path)
    (files[2] / "COCO_train2014_000000000002.jpg").unlink()
    ReferDataset(*files)  # not checked by default: stat-ing 20k files is the user's choice
    with pytest.raises(ConfigError, match=r"1 image\(s\) missing .*COCO_train2014_000000000002\.jpg"):
        ReferDataset(*files, check_images=True)
