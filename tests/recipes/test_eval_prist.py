"""``pixelagent recipe eval-prist`` end to end: PRIST-Synth split, the fake preset, resumable."""

import json
import time
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as coco
from PIL import Image

from pixelagent import Mask
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
    # the phrase named in each final answer against the record's focus, counted independently
    readings = places = 0
    for record in records:
        final = [a for (_, ref), a in zip(record.turns, predictions[record.id]["answers"]) if "[SEG]" in ref][-1]
        named = final.split("[OBJ]")[1].split("[SEG]")[0].strip() if "[OBJ]" in final else ""
        readings += " '" in record.focus  # a quoted word, not a possessive
        places += any(w in record.focus.split() for w in ("top", "bottom", "left", "right", "centre"))
        assert named or "[SEG]" not in final
    phrases = metrics["focus_phrases"]
    assert phrases["dialogues"] == len(records)
    assert phrases["text"]["asked"] == readings and phrases["place"]["asked"] == places
    assert 0 <= phrases["place"]["correct"] <= places


def test_missing_images_are_listed_and_skipped_never_replaced(fake, synth, tmp_path, capsys):
    records = load_split(synth, "test")
    broken = tmp_path / "data"
    broken.mkdir()
    (broken / "test.jsonl").write_text("\n".join(r.model_dump_json() for r in records[:5]) + "\n")
    (broken / "images").symlink_to(synth / "images")
    assert run_eval(broken, tmp_path / "o1", "--limit", "3") == 0
    gone = {records[3].id}
    (broken / "test.jsonl").write_text(
        "\n".join(r.model_copy(update={"image": "images/gone.png"} if r.id in gone else {}).model_dump_json()
                  for r in records[:5]) + "\n")
    capsys.readouterr()
    assert run_eval(broken, tmp_path / "o1") == 1
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert lines[0] == f"skipped {records[3].id}: image does not exist ({broken / 'images/gone.png'})"
    assert lines[-1].startswith("error: 1 of 5 dialogues skipped") and len(lines) == 2
    predictions = [json.loads(line)["id"] for line in (tmp_path / "o1" / "predictions.jsonl").read_text().splitlines()]
    assert predictions == [r.id for r in records[:5] if r.id not in gone]  # the others were evaluated
    metrics = json.loads((tmp_path / "o1" / "metrics.json").read_text())
    assert metrics["samples"] == 4 and [s["id"] for s in metrics["skipped"]] == sorted(gone)
    assert "1 dialogue(s) skipped" in (tmp_path / "o1" / "table3.md").read_text()


def load_recipe():
    import importlib.util

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


def test_an_unknown_metric_is_refused_before_the_model_answers_anything(synth, tmp_path, capsys):
    started = time.perf_counter()
    assert run_eval(synth, tmp_path / "out", "--metrics", "bleu4,segmentation") == 1
    err = capsys.readouterr().err
    assert "unknown response metric(s) ['segmentation'] in --metrics" in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists() and time.perf_counter() - started < 5  # no model, no predictions


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


# -- the published split, response-only, and the protocols ------------------------------------------
PUBLISHED = Path(__file__).resolve().parents[3] / "shared" / "prist" / "test.json"
needs_published = pytest.mark.skipif(not PUBLISHED.is_file(), reason="the published PRIST test split is absent")


def stand_in_images(folder, names):
    """Flat grey stand-ins named like the split's images (the real TextCaps images are not here)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        Image.fromarray(np.full((48, 64, 3), 128, np.uint8)).save(folder / name)
    return folder


@needs_published
def test_the_published_split_runs_response_only_with_an_images_folder(fake, tmp_path, capsys):
    entries = json.loads(PUBLISHED.read_text())[:8]
    present = sorted({e["img_id"] for e in entries[:6]})  # records 6 and 7 have another image: missing
    images = stand_in_images(tmp_path / "textcaps", present)
    out = tmp_path / "out"
    code = main(["recipe", "eval-prist", "--preset", "fake", "--data", str(PUBLISHED), "--images", str(images),
                 "--limit", "8", "--out", str(out), "--metrics", "dist"])
    captured = capsys.readouterr()
    assert code == 1 and "error: 2 of 8 dialogues skipped" in captured.err
    assert captured.err.count("skipped prist-test-0000") == 2 and "b4535490a7b61270.jpg" in captured.err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["mode"] == "response-only" and metrics["segmentation"] is None
    assert metrics["segmentation_per_mask"] is None and "--annotations" in metrics["segmentation_note"]
    assert metrics["samples"] == 6 and metrics["seg_turns"] == 6 and metrics["seg_turns_scored"] == 0
    assert metrics["response"]["count"] == sum(len(e["dialogue"]) // 2 - 1 for e in entries[:6])
    table = (out / "table3.md").read_text()
    assert "| fake | – | – | – | – |" in table and "Response-only" in table
    assert "response-only (no masks)" in captured.out and not (out / "by_granularity.png").exists()


def published_with_masks(tmp_path):
    """A tiny published split: one image (the fake scene), LabelMe masks, three dialogues."""
    import fake_plugin

    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(fake_plugin.make_scene()).save(images / "scene.png")
    dialogue = lambda question: [{"from": "human", "value": "What is there?"}, {"from": "gpt", "value": "Shapes."},  # noqa: E731
                                 {"from": "human", "value": question}, {"from": "gpt", "value": "Sure, [SEG]."}]
    entries = [{"img_id": "scene.png", "dialogue": dialogue("Segment the red one."), "focus": "red box"},
               {"img_id": "scene.png", "dialogue": dialogue("Segment the purple one."), "focus": "yellow box"},
               {"img_id": "scene.png", "dialogue": dialogue("Please divide the answers."), "focus": "red box"}]
    (tmp_path / "test.json").write_text(json.dumps(entries))
    annotations = tmp_path / "labelme"
    annotations.mkdir()
    red = [[10, 10], [69, 10], [69, 79], [10, 79]]
    yellow = [[85, 20], [119, 20], [119, 49], [85, 49]]
    (annotations / "scene.json").write_text(json.dumps({"imageHeight": 96, "imageWidth": 128, "shapes": [
        {"label": "red box", "points": red}, {"label": "yellow box", "points": yellow}]}))
    return tmp_path / "test.json", images, annotations


def test_published_masks_are_scored_and_no_seg_is_told_apart_from_empty_masks(fake, tmp_path):
    data, images, annotations = published_with_masks(tmp_path)
    out = tmp_path / "out"
    assert main(["recipe", "eval-prist", "--preset", "fake", "--data", str(data), "--images", str(images),
                 "--annotations", str(annotations), "--out", str(out), "--metrics", "none"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["mode"] == "segmentation and response" and metrics["seg_turns"] == 3
    # "red": a mask; "purple": [SEG] named but the mask is empty; "divide": no colour, no [SEG]
    assert metrics["no_seg_rate"] == pytest.approx(1 / 3) and metrics["empty_mask_rate"] == pytest.approx(1 / 3)
    truth_iou = 1.0  # the fake decoder's red box is the red rectangle, as the polygon fills it
    assert metrics["segmentation"]["overall"]["count"] == 3
    assert metrics["segmentation"]["overall"]["giou"] == pytest.approx(truth_iou / 3, abs=0.01)
    assert metrics["segmentation_per_mask"]["overall"]["count"] == 3


def multi_target_dataset(tmp_path):
    """A canonical split of the fake scene whose turns name several targets."""
    import fake_plugin
    from pixelagent.data.records import Message, PristRecord, TargetAnnotation, write_records

    (tmp_path / "images").mkdir()
    Image.fromarray(fake_plugin.make_scene()).save(tmp_path / "images" / "scene.png")
    masks = {c: Mask(fake_plugin.rectangle_mask(c)) for c in ("red", "blue", "yellow")}
    masks["red"] = Mask(fake_plugin.rectangle_mask("red") & ~fake_plugin.rectangle_mask("blue"))  # drawn over

    def record(i, question, colours):
        answer = "It is " + " and ".join(f"[OBJ]the {c} one[SEG]" for c in colours) + "."
        return PristRecord(id=f"m-{i}", image="images/scene.png", image_size=(96, 128), focus=colours[0],
                           messages=[Message(role="user", text="What is there?"), Message(role="assistant", text="Boxes."),
                                     Message(role="user", text=question), Message(role="assistant", text=answer)],
                           targets=[TargetAnnotation(phrase=c, mask=masks[c]) for c in colours])

    write_records(tmp_path / "test.jsonl", [
        record(0, "Segment the red and the yellow.", ["red", "yellow"]),
        record(1, "Segment the yellow and the blue.", ["blue", "yellow"]),  # predicted in the other order
        record(2, "Segment red, blue and yellow.", ["red", "yellow"])])  # one mask too many
    return tmp_path, masks


def test_per_mask_scoring_beside_the_per_turn_union(fake, tmp_path):
    from pixelagent.eval import SegmentationMeter

    data, masks = multi_target_dataset(tmp_path)
    out = tmp_path / "out"
    assert main(["recipe", "eval-prist", "--preset", "fake", "--data", str(data), "--out", str(out),
                 "--metrics", "none", "--scoring", "per-mask"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    boxes = {c: Mask(fake_plugin_box(c)) for c in ("red", "blue", "yellow")}
    union, per_mask = SegmentationMeter(), SegmentationMeter()
    cases = [(["red", "yellow"], ["red", "yellow"]), (["yellow", "blue"], ["blue", "yellow"]),
             (["red", "blue", "yellow"], ["red", "yellow"])]
    for predicted, truth in cases:
        union.add(Mask.union_all(boxes[c] for c in predicted), Mask.union_all(masks[c] for c in truth))
        for p, t in zip(predicted, truth):
            per_mask.add(boxes[p], masks[t])
    assert metrics["segmentation"]["overall"]["ciou"] == pytest.approx(union.result().overall.ciou)
    assert metrics["segmentation_per_mask"]["overall"]["ciou"] == pytest.approx(per_mask.result().overall.ciou)
    assert metrics["segmentation_per_mask"]["overall"]["count"] == 6 and metrics["extra_masks"] == 1
    assert metrics["segmentation"]["overall"]["ciou"] != metrics["segmentation_per_mask"]["overall"]["ciou"]
    assert "per mask (LISA)" in (out / "table3.md").read_text()


def fake_plugin_box(colour):
    import fake_plugin

    return fake_plugin.rectangle_mask(colour)



@pytest.fixture
def chat_endpoint(monkeypatch):
    from pixelagent.llm.testing import FakeChatServer

    def answer(request):
        last = request.messages[-1]["content"][-1]["text"]
        return "<box>(10, 10), (70, 80)</box> " if "no detected" in last else "A considered answer."

    server = FakeChatServer(answer).start()
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-eval-test")
    yield server
    server.stop()


def test_the_c3_baseline_is_asked_as_the_paper_did(chat_endpoint, tmp_path):
    data, images, annotations = published_with_masks(tmp_path)
    out = tmp_path / "paper"
    args = ["recipe", "eval-prist", "--preset", "gpt4o-bbox", "--data", str(data), "--images", str(images),
            "--annotations", str(annotations), "--metrics", "dist"]
    assert main([*args, "--out", str(out), "--protocol", "paper"]) == 0
    requests = chat_endpoint.requests
    assert len(requests) == 6 and all(r.messages[0]["role"] == "user" for r in requests)  # no system prompt
    for index, request in enumerate(requests):
        texts = [part["text"] for m in request.messages if m["role"] == "user" for part in m["content"]
                 if part.get("type") == "text"]
        if index % 2 == 0:  # the reasoning turn: as the dataset wrote it, nothing added
            assert texts == ["What is there?"]
        else:  # the segmentation query (marked by the dataset, "divide" included) carries the C.3 prompt
            assert texts[0] == "What is there?" and "<box>(x1, y1), (x2, y2)</box>" in texts[1]
            assert '"no detected"' in texts[1]
    assert "divide" in requests[5].messages[-1]["content"][0]["text"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["baseline"] is True and "last round excluded" in metrics["response_turns"]
    assert metrics["response"]["count"] == 3  # the three reasoning answers only
    assert metrics["no_seg_rate"] == 0 and metrics["segmentation"]["overall"]["count"] == 3
    assert json.loads((out / "run.json").read_text())["asked_with"] == "paper"
    # the same predictions cannot be continued under the other protocol
    (out / "predictions.jsonl").write_text("")
    code = main([*args, "--out", str(out), "--protocol", "pixelagent"])
    assert code == 1


def test_the_pixelagent_protocol_keeps_the_system_prompt_and_a_users_c3_prompt_file_is_used(chat_endpoint, tmp_path):
    data, images, annotations = published_with_masks(tmp_path)
    args = ["recipe", "eval-prist", "--preset", "gpt4o-bbox", "--data", str(data), "--images", str(images),
            "--metrics", "none", "--limit", "1"]
    assert main([*args, "--out", str(tmp_path / "ours")]) == 0
    assert all(r.messages[0]["role"] == "system" and "<box>" in r.messages[0]["content"]
               for r in chat_endpoint.requests)
    chat_endpoint.requests.clear()
    mine = tmp_path / "c3.txt"
    mine.write_text("Draw the box as <box>(x1, y1), (x2, y2)</box> on this {{width}}x{{height}} image, "
                    "or say no detected.")
    assert main([*args, "--out", str(tmp_path / "mine"), "--protocol", "paper", "--segmentation-prompt", str(mine)]) == 0
    last = chat_endpoint.requests[-1].messages[-1]["content"][0]["text"]
    assert last.endswith("on this 128x96 image, or say no detected.")
    assert json.loads((tmp_path / "mine" / "run.json").read_text())["segmentation_prompt"] == str(mine)


def test_the_paper_protocol_scores_trained_models_on_every_answer(fake, tmp_path):
    data, _ = multi_target_dataset(tmp_path)
    counts = {}
    for protocol in ("paper", "pixelagent"):
        out = tmp_path / protocol
        assert main(["recipe", "eval-prist", "--preset", "fake", "--data", str(data), "--out", str(out),
                     "--metrics", "dist", "--protocol", protocol]) == 0
        counts[protocol] = json.loads((out / "metrics.json").read_text())["response"]["count"]
    assert counts == {"paper": 6, "pixelagent": 3}
