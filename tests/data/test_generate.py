"""The three-step generation pipeline against a real local OpenAI-style server on 127.0.0.1."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import chat_clients
from pixelagent.data import prompts
from pixelagent.data.generate import (
    DialogueSet,
    ReasoningTree,
    generate_dataset,
)
from pixelagent.data.records import read_records
from pixelagent.errors import ConfigError
from pixelagent.llm import ChatClient, LLMError
from pixelagent.llm.testing import FakeChatServer, FakeReply
from pixelagent.markup import find_focus_spans, format_focus

KEY = "sk-gen-SECRET-key-4242"

# Figure 7b's own mixed key spellings, on purpose.
TREE = {
    "root node": "A shop front",
    "levels": ["First Level: the signs", "Second Level: details of the door"],
    "inference_nodes": [
        {"node_name": "Reading the sign", "overlap": "Overlap of Path 1 and 2",
         "reasoning_paths": [
             {"path name": "Path 1", "path_description": "read the sign", "reasoning_question": "What is sold?"},
             {"path_name": "Path 2", "path_description": "compare the signs", "reasoning_question": "Which is older?"}]},
        {"node name": "The door", "overlap": "Path 1 Independent",
         "reasoning paths": [
             {"path_name": "Path 1", "path_description": "look at the door handle",
              "reasoning_question": "How do you get in?"}]},
    ],
}


def elements(width: int) -> dict:
    return {"elements": [{"name": f"sign {width}", "text": "red sign saying OPEN", "caption": "a sign"},
                         {"name": "door", "text": "wooden door", "number": 1, "caption": "a door",
                          "color": "brown"},
                         {"name": "window", "text": "glass window", "caption": "a window"}]}


def dialogues(width: int, focus_key: str = "Focus") -> dict:
    return {
        "Question1": {"Q1": "What does the sign say?", "A1": "It says OPEN.",
                      "Q2": "What colour are its letters?", "A2": "The letters are red [SEG].",
                      focus_key: f"red letters {width}"},
        "Question2": {"Q1": "How do you enter?", "A1": "Through the door.", "Q2": "Which part opens it?",
                      "A2": "The handle.", "Q3": "Where is it?", "A3": "On the right.",
                      focus_key: f"door handle {width}"},
    }


def image_width(request) -> int:
    _, data = request.image_urls[0].split(",", 1)
    return Image.open(io.BytesIO(base64.b64decode(data))).size[0]


def responder(fail_widths=(), break_first_dialogue=False):
    """Answer each step by the prompt's role; the image's width tells the images apart."""
    state = {"broken": False}

    def respond(request):
        width = image_width(request)
        if width in fail_widths:
            return FakeReply(status=500, content="overloaded")
        if "Dialogue Generator" in request.text:
            if break_first_dialogue and not state["broken"]:
                state["broken"] = True
                return json.dumps(dialogues(width, focus_key="Target"))  # no Focus: needs a repair
            return json.dumps(dialogues(width))
        if "Visual Reasoning Expert" in request.text:
            return "```json\n" + json.dumps(TREE) + "\n```"
        assert "Visual Extractor" in request.text
        return json.dumps(elements(width))
    return respond


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "out" / "images"
    folder.mkdir(parents=True)
    for i in range(4):  # widths 20..23 identify the images on the server side
        Image.fromarray(np.full((16, 20 + i, 3), 40 * i, np.uint8)).save(folder / f"img{i}.png")
    (folder / "notes.txt").write_text("not an image")
    return folder


def client_for(server, **overrides):
    return chat_clients.client_for(server, KEY, **overrides)


def lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_three_steps_make_valid_records(images, tmp_path):
    out = tmp_path / "out"
    with FakeChatServer(responder()) as server:
        report = generate_dataset(images, out, client_for(server), split="val", limit=1)
    assert (report.completed, report.failed, report.records_written, report.images_found) == (1, 0, 2, 4)
    records = list(read_records(out / "val.jsonl"))
    assert [r.id for r in records] == ["img0-1", "img0-2"]
    first, second = records
    assert first.image == "images/img0.png" and first.image_size == (16, 20) and first.split == "val"
    assert first.focus == "red letters 20" and [t.phrase for t in first.targets] == ["red letters 20"]
    assert first.targets[0].mask is None
    question, answer = first.turns[-1]
    assert question in prompts.SEGMENT_REQUESTS
    assert format_focus("red letters 20") in answer and [s.phrase for s in find_focus_spans(answer)] == ["red letters 20"]
    assert first.turns[1] == ("What colour are its letters?", "The letters are red.")  # stray token dropped
    assert len(second.turns) == 4  # 3 rounds + the segmentation turn
    assert first.reasoning_path == ["read the sign", "look at the door handle"]
    assert second.reasoning_path == ["compare the signs"]
    assert first.elements[1] == {"name": "door", "text": "wooden door", "number": 1, "caption": "a door",
                                 "color": "brown"}
    # Three requests, each with the image; steps 2 and 3 see what came before.
    step1, step2, step3 = server.requests
    assert all(r.image_urls[0].startswith("data:image/jpeg;base64,") for r in server.requests)
    assert "sign 20" in step2.text and "sign 20" in step3.text and "look at the door handle" in step3.text
    assert step1.body["response_format"] == {"type": "json_object"}


def test_invalid_dialogue_json_is_repaired(images, tmp_path):
    with FakeChatServer(responder(break_first_dialogue=True)) as server:
        report = generate_dataset(images, tmp_path / "out", client_for(server), limit=1)
    assert report.completed == 1 and len(server.requests) == 4
    assert "Focus" in server.requests[-1].messages[-1]["content"]  # the repair turn names the problem


def test_failed_image_is_logged_and_the_rest_resumes(images, tmp_path):
    out = tmp_path / "out"
    with FakeChatServer(responder(fail_widths={22})) as server:  # every request for img2 fails
        report = generate_dataset(images, out, client_for(server), limit=3, concurrency=2)
    assert (report.completed, report.failed) == (2, 1)
    assert {r["id"] for r in lines(out / "train.jsonl")} == {"img0-1", "img0-2", "img1-1", "img1-2"}
    [failure] = lines(out / "failures.jsonl")
    assert failure["image"].endswith("img2.png") and failure["step"] == "elements"
    assert "HTTP 500" in failure["error"] and KEY not in (out / "failures.jsonl").read_text()

    with FakeChatServer(responder()) as healthy:
        again = generate_dataset(images, out, client_for(healthy))
    assert (again.skipped, again.completed, again.failed) == (2, 2, 0)
    assert {image_width(r) for r in healthy.requests} == {22, 23}  # done images are not asked again
    ids = [r["id"] for r in lines(out / "train.jsonl")]
    assert sorted(ids) == sorted(f"img{i}-{k}" for i in range(4) for k in (1, 2)) and len(ids) == len(set(ids))


def test_interrupted_run_keeps_completed_images(images, tmp_path):
    out = tmp_path / "out"

    def kill_after_two(done, total, name):
        if done == 2:
            raise KeyboardInterrupt

    with FakeChatServer(responder()) as server:
        with pytest.raises(KeyboardInterrupt):
            generate_dataset(images, out, client_for(server), concurrency=1, progress=kill_after_two)
        assert {r["id"] for r in lines(out / "train.jsonl")} == {"img0-1", "img0-2", "img1-1", "img1-2"}
        report = generate_dataset(images, out, client_for(server))
    assert (report.skipped, report.completed) == (2, 2)
    assert len(lines(out / "train.jsonl")) == 8


def test_a_torn_last_line_is_cut_and_its_image_redone(images, tmp_path):
    out = tmp_path / "out"
    with FakeChatServer(responder()) as server:
        generate_dataset(images, out, client_for(server), limit=2, concurrency=1)
        path = out / "train.jsonl"
        text = path.read_text()
        path.write_text(text[: text.rindex('{"id":"img1-2"') + 30])  # img1-1 whole, img1-2 torn
        report = generate_dataset(images, out, client_for(server))
    assert (report.skipped, report.completed) == (1, 3)
    ids = [r.id for r in read_records(out / "train.jsonl")]
    assert sorted(ids) == sorted(f"img{i}-{k}" for i in range(4) for k in (1, 2))


def test_requests_are_rate_limited_by_the_client(images, tmp_path):
    def slow(request):
        reply = responder()(request)
        return FakeReply(content=reply, delay=0.05)

    with FakeChatServer(slow) as server:
        report = generate_dataset(images, tmp_path / "out", client_for(server, max_concurrency=2), concurrency=4)
    assert report.completed == 4 and server.max_in_flight == 2


def test_a_bad_key_stops_the_run(images, tmp_path):
    with FakeChatServer(lambda request: FakeReply(status=401, content="bad key")) as server:
        with pytest.raises(LLMError, match="401"):
            generate_dataset(images, tmp_path / "out", client_for(server))
    assert len(server.requests) <= 4


def test_bad_arguments(images, tmp_path):
    client = ChatClient(base_url="http://127.0.0.1:9/v1", api_key=KEY)
    with pytest.raises(ConfigError, match="split"):
        generate_dataset(images, tmp_path / "out", client, split="dev")
    with pytest.raises(ConfigError, match="does not exist"):
        generate_dataset(tmp_path / "missing", tmp_path / "out", client)


def test_schemas_accept_the_papers_spellings_and_reject_broken_dialogues():
    tree = ReasoningTree.model_validate(TREE)
    assert tree.root_node == "A shop front"
    assert tree.path_descriptions() == [["read the sign", "look at the door handle"], ["compare the signs"]]
    parsed = DialogueSet.model_validate({"Question2": {"q1": "b?", "a1": "b", "Q2": "c?", "A2": "c", "focus": "y"},
                                         "Question1": {"Q1": "a?", "A1": "a", "Q2": "d?", "A2": "d", "Focus": "x"}})
    assert [d.focus for d in parsed.dialogues] == ["x", "y"]
    for broken in ({"Question1": {"Q1": "a?", "A1": "a", "Q2": "b?", "Focus": "x"}},  # Q2 without A2
                   {"Question1": {"Q1": "a?", "A1": "a", "Q2": "b?", "A2": "b"}},  # no Focus
                   {"Question1": {"Q1": "a?", "A1": "a", "Focus": "x"}},  # one round only
                   {"dialogue": []}):
        with pytest.raises(ValueError):
            DialogueSet.model_validate(broken)


def test_cli_command(images, tmp_path, monkeypatch):
    from pixelagent.data.cli import data_app as app
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    out = tmp_path / "out"
    with FakeChatServer(responder()) as server:
        result = CliRunner().invoke(app, ["generate", "--images", str(images), "--out", str(out),
                                          "--base-url", server.base_url, "--limit", "2", "--model", "m1"])
    assert result.exit_code == 0, result.output
    assert "2 image(s) done" in result.output and KEY not in result.output
    assert len(lines(out / "train.jsonl")) == 4
    assert {r.body["model"] for r in server.requests} == {"m1"}


def test_images_outside_the_dataset_folder_are_linked_in(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(elsewhere / "a.png")
    with FakeChatServer(responder()) as server:
        report = generate_dataset(elsewhere, tmp_path / "out", client_for(server), limit=1)
    assert report.completed == 1
    assert (tmp_path / "out" / "images").resolve() == elsewhere.resolve()
    record = next(read_records(tmp_path / "out" / "train.jsonl"))
    assert record.image == "images/a.png" and (tmp_path / "out" / record.image).is_file()


def test_an_images_entry_that_is_something_else_is_refused_before_any_request(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(elsewhere / "a.png")
    (tmp_path / "out" / "images").mkdir(parents=True)
    with FakeChatServer(responder()) as server:
        with pytest.raises(ConfigError, match=r"is outside --out .*already something else"):
            generate_dataset(elsewhere, tmp_path / "out", client_for(server))
        assert server.requests == []
