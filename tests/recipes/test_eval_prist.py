"""``pixelagent recipe eval-prist`` end to end: PRIST-Synth split, the fake preset, resumable."""

import json
import time

import numpy as np
import pytest
from pycocotools import mask as coco
from PIL import Image

from pixelagent.cli import main
from pixelagent.data.records import load_split
from pixelagent.data.synth import SynthConfig, synthesize


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    synthesize(out, SynthConfig(n=200, size=128, seed=3, splits=(0.0, 0.0, 1.0)))
    return out


def recolour_for_the_fake_model(directory):
    """Paint a third of the test targets in the fake model's pure red and ask for "the red one"
    there, so that the fake model (which segments the colours a question names) finds them."""
    from pixelagent.data.records import Message, write_records

    records = load_split(directory, "test")
    changed = []
    for index, record in enumerate(records):
        if index % 3 == 0:
            path = directory / record.image
            pixels = np.array(Image.open(path).convert("RGB"))
            pixels[record.targets[0].mask.array] = (220, 40, 40)
            Image.fromarray(pixels).save(path)
            messages = [*record.messages[:-2], Message(role="user", text="Please segment the red one."),
                        record.messages[-1]]
            record = record.model_copy(update={"messages": messages})
        changed.append(record)
    write_records(directory / "test.jsonl", changed)
    return changed


def run_eval(synth, out, *extra):
    return main(["recipe", "eval-prist", "--preset", "fake", "--data", str(synth), "--out", str(out),
                 "--metrics", "bleu4,dist,rouge_l", *extra])


def test_evaluates_a_200_sample_split_resumably(fake, synth, tmp_path, capsys):
    records = load_split(synth, "test")
    assert len(records) == 200
    start = time.perf_counter()
    assert run_eval(synth, tmp_path, "--limit", "60") == 0
    first = (tmp_path / "predictions.jsonl").read_text().splitlines()
    assert len(first) == 60
    assert run_eval(synth, tmp_path) == 0
    seconds = time.perf_counter() - start
    lines = (tmp_path / "predictions.jsonl").read_text().splitlines()
    assert lines[:60] == first and len(lines) == 200  # resumed: the first 60 were kept, not redone
    assert len({json.loads(line)["id"] for line in lines}) == 200
    assert seconds < 60, seconds
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["samples"] == 200 and metrics["response"]["count"] > 0
    assert "sacrebleu" in metrics["response"]["implementations"]["bleu4"]
    assert (tmp_path / "table3.md").read_text().startswith("| Model | cIoU")
    assert Image.open(tmp_path / "by_granularity.png").size[0] > 100
    assert "200 dialogues" in capsys.readouterr().out


def test_metrics_match_an_independent_computation(fake, synth, tmp_path_factory):
    data = tmp_path_factory.mktemp("recoloured")
    synthesize(data, SynthConfig(n=60, size=128, seed=4, samples_per_image=1, splits=(0.0, 0.0, 1.0)))
    records = recolour_for_the_fake_model(data)
    out = tmp_path_factory.mktemp("eval")
    assert run_eval(data, out, "--metrics", "none") == 0
    predictions = {json.loads(l)["id"]: json.loads(l) for l in (out / "predictions.jsonl").read_text().splitlines()}
    inter = union = 0
    no_seg = 0
    fine_target, fine_parent = [], []
    for record in records:
        pred = predictions[record.id]["masks"][-1]
        target = record.targets[0]
        truth = target.mask.array
        predicted = np.zeros_like(truth) if pred is None else coco.decode(pred).astype(bool)
        no_seg += pred is None
        inter += int((predicted & truth).sum())
        union += int((predicted | truth).sum())
        if target.granularity.value == "fine" and target.parent is not None:
            parent = target.parent.array
            fine_target.append((predicted & truth).sum() / (predicted | truth).sum())
            fine_parent.append((predicted & parent).sum() / (predicted | parent).sum())
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["segmentation"]["overall"]["ciou"] == pytest.approx(inter / union)
    assert metrics["no_seg_rate"] == pytest.approx(no_seg / len(records))
    fine = metrics["fine_vs_parent"]
    assert fine["turns"] == len(fine_target) > 0
    assert fine["target_iou"] == pytest.approx(np.mean(fine_target))
    assert fine["parent_iou"] == pytest.approx(np.mean(fine_parent))
    assert 0 < inter  # the recoloured targets were found
    assert metrics["response"] is None


def test_a_missing_image_stops_with_one_line_and_keeps_the_predictions(fake, synth, tmp_path, capsys):
    records = load_split(synth, "test")
    broken = tmp_path / "data"
    broken.mkdir()
    (broken / "test.jsonl").write_text("\n".join(r.model_dump_json() for r in records[:5]) + "\n")
    (broken / "images").symlink_to(synth / "images")
    missing = records[3].image
    assert run_eval(broken, tmp_path / "o1", "--limit", "3") == 0
    (broken / "test.jsonl").write_text(
        "\n".join(r.model_copy(update={"image": "images/gone.png"} if r.image == missing else {}).model_dump_json()
                  for r in records[:5]) + "\n")
    assert run_eval(broken, tmp_path / "o1") == 1
    err = capsys.readouterr().err
    assert "images/gone.png does not exist" in err and err.count("\n") == 1
    assert len((tmp_path / "o1" / "predictions.jsonl").read_text().splitlines()) == 3


def load_recipe():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "recipes" / "eval_prist.py"
    spec = importlib.util.spec_from_file_location("eval_prist_under_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("image, problem", [("../../x.png", "climbs out"), ("/etc/passwd", "is absolute")])
def test_a_record_whose_image_leaves_the_data_folder_is_refused_with_file_and_line(synth, tmp_path, capsys,
                                                                                  image, problem):
    records = load_split(synth, "test")[:3]
    data = tmp_path / "data"
    data.mkdir()
    lines = [r.model_dump_json() for r in records]
    lines[1] = lines[1].replace(json.dumps(records[1].image), json.dumps(image))
    (data / "test.jsonl").write_text("\n".join(lines) + "\n")
    assert run_eval(data, tmp_path / "out") == 1
    err = capsys.readouterr().err
    assert f"test.jsonl:2: invalid record: image: image path {image!r} {problem}" in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()  # refused before the model is built or anything written


def test_predict_joins_paths_inside_the_data_folder_only(synth, tmp_path):
    from pixelagent.errors import ConfigError

    recipe = load_recipe()
    record = load_split(synth, "test")[0]
    forged = record.model_construct(**{**dict(record), "image": "../" * 8 + "etc/passwd"})  # skips validation
    with pytest.raises(ConfigError, match=f"record {record.id}: image path .* climbs out"):
        recipe.predict(None, forged, synth)
    import os

    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    os.mkfifo(data / record.image)
    with pytest.raises(ConfigError, match="is a FIFO"):
        recipe.predict(None, record, data)


def test_read_predictions_keeps_whole_lines_and_ignores_the_rest(tmp_path):
    from pixelagent.errors import ConfigError

    recipe = load_recipe()
    path = tmp_path / "predictions.jsonl"
    good = {"id": "a", "answers": ["x"], "masks": [None], "seconds": 0.1}
    path.write_text("\n".join([json.dumps(good), "[1, 2]", json.dumps({"id": 5}), '{"answers": []}',
                               json.dumps({**good, "id": "b", "masks": ["no"]}), '{"id": "c", "ans']) + "\n")
    assert list(recipe.read_predictions(path)) == ["a"]
    path.write_bytes(b'{"id": "\xff"}\n')
    with pytest.raises(ConfigError, match="predictions file .* is not UTF-8"):
        recipe.read_predictions(path)
    assert recipe.read_predictions(tmp_path / "none.jsonl") == {}
