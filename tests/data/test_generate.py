"""The three-step generation pipeline against a real local OpenAI-style server on 127.0.0.1."""

from __future__ import annotations

import base64
import io
import json
import re

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import chat_clients
from pixelagent.data import prompts
from pixelagent.data.generate import (
    Constraints,
    Dialogue,
    DialogueSet,
    ReasoningTree,
    choose_targets,
    dialogue_problems,
    generate_dataset,
    tree_problems,
)
from pixelagent.data.records import read_records
from pixelagent.errors import ConfigError
from pixelagent.llm import ChatClient, LLMError
from pixelagent.llm.testing import FakeChatServer, FakeReply
from pixelagent.markup import find_focus_spans, format_focus

KEY = "sk-gen-SECRET-key-4242"

# Figure 7b's own mixed key spellings, on purpose (two paths; tree(k) adds more).
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


def tree(k: int) -> dict:
    """TREE with paths 3..k added under a third node (a node holds at most 3 children)."""
    extra = [{"path_name": f"Path {n}", "path_description": f"step of path {n}", "reasoning_question": f"q{n}?"}
             for n in range(3, k + 1)]
    if not extra:
        return TREE
    return {**TREE, "inference_nodes": [*TREE["inference_nodes"], {"node_name": "More", "reasoning_paths": extra}]}


def elements(width: int) -> dict:
    return {"elements": [{"name": f"sign {width}", "text": "red sign saying OPEN", "caption": "a sign"},
                         {"name": "door", "text": "wooden door", "number": 1, "caption": "a door",
                          "color": "brown"},
                         {"name": "window", "text": "glass window", "caption": "a window"}]}


def dialogues(width: int, focus_key: str = "Focus", k: int = 2) -> dict:
    entries = {
        "Question1": {"Q1": "What does the sign say?", "A1": "It says OPEN.",
                      "Q2": "What colour are its letters?", "A2": "The letters are red [SEG].",
                      focus_key: f"red letters {width}"},
        "Question2": {"Q1": "How do you enter?", "A1": "Through the door.", "Q2": "Which part opens it?",
                      "A2": "The handle.", "Q3": "Where is it?", "A3": "On the right.",
                      focus_key: f"door handle {width}"},
    }
    for n in range(3, k + 1):
        entries[f"Question{n}"] = {"Q1": "Is there a window?", "A1": "Yes.", "Q2": "What is it made of?",
                                   "A2": "Glass.", focus_key: f"window {width}"}
    return entries


def k_of(request) -> int:
    """The K the pipeline asked for (our prompts say "Design K reasoning questions" / "K in all")."""
    match = re.search(r"Design (\d+) reasoning questions|\((\d+) in all\)", request.text)
    return int(next(g for g in match.groups() if g))


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
                return json.dumps(dialogues(width, focus_key="Target", k=k_of(request)))  # no Focus: repaired
            return json.dumps(dialogues(width, k=k_of(request)))
        if "Visual Reasoning Expert" in request.text:
            return "```json\n" + json.dumps(tree(k_of(request))) + "\n```"
        assert "Visual Extractor" in request.text
        return json.dumps(elements(width))
    return respond


def expected_k(stem: str, seed: int = 0) -> int:
    return len(choose_targets(elements(20)["elements"], stem, seed, Constraints()))


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "out" / "images"
    folder.mkdir(parents=True)
    for i in range(4):  # widths 20..23 identify the images on the server side
        Image.fromarray(np.full((16, 20 + i, 3), 40 * i, np.uint8)).save(folder / f"img{i}.png")
    (folder / "notes.txt").write_text("not an image")
    return folder


def ids_for(*indices) -> set[str]:
    """Record ids of images img<i> (K dialogues each, all valid in the scripted replies)."""
    return {f"img{i}-{n}" for i in indices for n in range(1, expected_k(f"img{i}") + 1)}


def client_for(server, **overrides):
    return chat_clients.client_for(server, KEY, **overrides)


def lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_three_steps_make_valid_records(images, tmp_path):
    out = tmp_path / "out"
    with FakeChatServer(responder()) as server:
        report = generate_dataset(images, out, client_for(server), split="val", limit=1)
    k = expected_k("img0")
    assert k == 3  # drawn in [2, min(N=3, 4)], seeded by the image's name
    assert (report.completed, report.failed, report.records_written, report.images_found) == (1, 0, k, 4)
    assert (report.dialogues_kept, report.dialogues_repaired, report.dialogues_dropped) == (k, 0, 0)
    assert report.k_counts == {"3": 1} and report.prompts["dialogue"] == "pixelagent:dialogue.txt"
    records = list(read_records(out / "val.jsonl"))
    assert [r.id for r in records] == ["img0-1", "img0-2", "img0-3"]
    first, second, third = records
    assert first.image == "images/img0.png" and first.image_size == (16, 20) and first.split == "val"
    assert first.focus == "red letters 20" and [t.phrase for t in first.targets] == ["red letters 20"]
    assert first.targets[0].mask is None
    question, answer = first.turns[-1]
    assert question in prompts.SEGMENT_REQUESTS
    assert format_focus("red letters 20") in answer and [s.phrase for s in find_focus_spans(answer)] == ["red letters 20"]
    assert first.turns[1] == ("What colour are its letters?", "The letters are red.")  # stray token dropped
    assert len(second.turns) == 4  # 3 rounds + the segmentation turn
    assert first.reasoning_path == ["read the sign", "look at the door handle"]
    assert second.reasoning_path == ["compare the signs"] and third.reasoning_path == ["step of path 3"]
    assert first.elements[1] == {"name": "door", "text": "wooden door", "number": 1, "caption": "a door",
                                 "color": "brown"}
    # Three requests, each with the image; steps 2 and 3 see what came before.
    step1, step2, step3 = server.requests
    assert all(r.image_urls[0].startswith("data:image/jpeg;base64,") for r in server.requests)
    assert "sign 20" in step2.text and "sign 20" in step3.text and "look at the door handle" in step3.text
    assert "Design 3 reasoning questions" in step2.text and "more than 3 children" in step2.text
    assert "4 to 8 turns, that is 2 to 4 question/answer pairs" in step3.text
    assert step1.body["response_format"] == {"type": "json_object"}


def test_invalid_dialogue_json_is_repaired(images, tmp_path):
    with FakeChatServer(responder(break_first_dialogue=True)) as server:
        report = generate_dataset(images, tmp_path / "out", client_for(server), limit=1)
    assert report.completed == 1 and len(server.requests) == 4
    assert (report.dialogues_kept, report.dialogues_repaired) == (3, 3)
    repair = server.requests[-1].messages[-1]["content"]
    assert 'Question1: missing "Focus"' in repair and "Rewrite only those dialogues" in repair


def test_failed_image_is_logged_and_the_rest_resumes(images, tmp_path):
    out = tmp_path / "out"
    with FakeChatServer(responder(fail_widths={22})) as server:  # every request for img2 fails
        report = generate_dataset(images, out, client_for(server), limit=3, concurrency=2)
    assert (report.completed, report.failed) == (2, 1)
    assert {r["id"] for r in lines(out / "train.jsonl")} == ids_for(0, 1)
    [failure] = lines(out / "failures.jsonl")
    assert failure["image"].endswith("img2.png") and failure["step"] == "elements"
    assert "HTTP 500" in failure["error"] and KEY not in (out / "failures.jsonl").read_text()

    with FakeChatServer(responder()) as healthy:
        again = generate_dataset(images, out, client_for(healthy))
    assert (again.skipped, again.completed, again.failed) == (2, 2, 0)
    assert {image_width(r) for r in healthy.requests} == {22, 23}  # done images are not asked again
    ids = [r["id"] for r in lines(out / "train.jsonl")]
    assert set(ids) == ids_for(0, 1, 2, 3) and len(ids) == len(set(ids))


def test_interrupted_run_keeps_completed_images(images, tmp_path):
    out = tmp_path / "out"

    def kill_after_two(done, total, name):
        if done == 2:
            raise KeyboardInterrupt

    with FakeChatServer(responder()) as server:
        with pytest.raises(KeyboardInterrupt):
            generate_dataset(images, out, client_for(server), concurrency=1, progress=kill_after_two)
        assert {r["id"] for r in lines(out / "train.jsonl")} == ids_for(0, 1)
        report = generate_dataset(images, out, client_for(server))
    assert (report.skipped, report.completed) == (2, 2)
    assert len(lines(out / "train.jsonl")) == len(ids_for(0, 1, 2, 3))


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
    assert sorted(ids) == sorted(ids_for(0, 1, 2, 3))


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


def test_schemas_accept_the_papers_spellings_and_flag_broken_dialogues_one_by_one():
    tree = ReasoningTree.model_validate(TREE)
    assert tree.root_node == "A shop front"
    assert tree.path_descriptions() == [["read the sign", "look at the door handle"], ["compare the signs"]]
    parsed = DialogueSet.model_validate({"Question2": {"q1": "b?", "a1": "b", "Q2": "c?", "A2": "c", "focus": "y"},
                                         "Question1": {"Q1": "a?", "A1": "a", "Q2": "d?", "A2": "d", "Focus": "x"}})
    assert [d.focus for d in parsed.dialogues] == ["x", "y"]
    assert not any(d.problems for d in parsed.check(Constraints()).dialogues)
    broken = {"Question1": {"Q1": "a?", "A1": "a", "Q2": "b?", "Focus": "x"},  # Q2 without A2, one pair left
              "Question2": {"Q1": "a?", "A1": "a", "Q2": "b?", "A2": "b"},  # no Focus
              "Question3": {"Q1": "a?", "A1": "a", "Focus": "x"},  # one pair only
              "Question4": "not an object"}
    checked = DialogueSet.model_validate(broken).check(Constraints())
    problems = {d.number: " ".join(d.problems) for d in checked.dialogues}
    assert "Q2 has no A2" in problems[1] and "1 question/answer pair(s) (2 turns); 2 to 4" in problems[1]
    assert 'missing "Focus"' in problems[2] and "1 question/answer pair" in problems[3]
    assert "not an object" in problems[4]
    with pytest.raises(ValueError):
        DialogueSet.model_validate({"dialogue": []})  # no QuestionN at all: the client repairs the reply


def test_constraint_checks_name_what_is_wrong():
    wide = {"root node": "r", "inference_nodes": [
        {"node_name": f"n{i}", "reasoning_paths": [{"path_name": f"Path {i * 4 + j}", "path_description": "d"}
                                                   for j in range(4)]} for i in range(4)]}
    problems = tree_problems(ReasoningTree.model_validate(wide), 4, 3)
    assert "the root has 4 inference nodes" in problems[0] and "has 4 reasoning paths, at most 3" in problems[1]
    assert "the tree has 16 reasoning path(s); it needs exactly 4" in problems[-1]
    six = Dialogue(number=2, turns=[("q?", "a")] * 6, focus=" ".join(["word"] * 25))
    assert [p.split(":")[1].split(";")[0] for p in dialogue_problems(six, Constraints())] == [
        " 6 question/answer pair(s) (12 turns)", " the Focus has 25 words"]
    with pytest.raises(ValueError):
        Constraints(min_k=5, max_k=4)


def test_k_is_drawn_uniformly_within_two_and_min_n_four():
    for n in (3, 4, 7):
        items = [{"name": str(i)} for i in range(n)]
        draws = [choose_targets(items, f"image{i}", 0, Constraints()) for i in range(300)]
        ks = {len(d) for d in draws}
        assert ks == set(range(2, min(n, 4) + 1)), (n, ks)
        assert all(len(set(d)) == len(d) and all(0 <= j < n for j in d) for d in draws)
    items = [{"name": str(i)} for i in range(7)]
    assert choose_targets(items, "x", 0, Constraints()) == choose_targets(items, "x", 0, Constraints())


def scripted_steps(tree_replies, dialogue_replies):
    """A responder answering the tree and dialogue steps from lists (the last one repeats)."""
    seen = {"tree": 0, "dialogue": 0}

    def respond(request):
        width = image_width(request)
        if "Visual Extractor" in request.text and "Visual Reasoning Expert" not in request.text \
                and "Dialogue Generator" not in request.text:
            return json.dumps(elements(width))
        step = "dialogue" if "Dialogue Generator" in request.text else "tree"
        replies = dialogue_replies if step == "dialogue" else tree_replies
        reply = replies[min(seen[step], len(replies) - 1)]
        seen[step] += 1
        return json.dumps(reply(request) if callable(reply) else reply)
    return respond


def test_a_tree_that_breaks_the_constraints_gets_a_repair_turn(images, tmp_path):
    k = expected_k("img0")
    five = {"root node": "r", "inference_nodes": [
        {"node_name": "n", "reasoning_paths": [{"path_name": f"Path {i}", "path_description": "d"} for i in range(1, 6)]}]}
    with FakeChatServer(scripted_steps([five, tree(k)], [lambda r: dialogues(20, k=k_of(r))])) as server:
        report = generate_dataset(images, tmp_path / "out", client_for(server), limit=1)
    assert report.completed == 1 and report.records_written == k
    repair = server.requests[2].messages[-1]["content"]
    assert "has 5 reasoning paths, at most 3" in repair and f"it needs exactly {k}" in repair


def test_an_invalid_dialogue_is_repaired_or_dropped_alone(images, tmp_path):
    k = expected_k("img0")  # 3
    first = dialogues(20, k=k)
    first["Question2"] = {**{f"{x}{n}": f"{x.lower()}{n}?" for n in range(1, 7) for x in "QA"}, "Focus": "door"}
    first["Question3"] = {"Q1": "only one?", "A1": "yes", "Focus": "window"}
    first["Question4"] = dialogues(20)["Question1"]  # beyond K
    rewrite = {"Question2": dialogues(20)["Question2"],  # now 3 pairs: repaired
               "Question3": {"Q1": "still one?", "A1": "yes", "Focus": "window"}}  # still short: dropped
    out = tmp_path / "out"
    with FakeChatServer(scripted_steps([tree(k)], [first, rewrite])) as server:
        report = generate_dataset(images, out, client_for(server), limit=1)
    assert (report.completed, report.records_written) == (1, 2)
    assert (report.dialogues_kept, report.dialogues_repaired, report.dialogues_dropped,
            report.dialogues_beyond_k) == (2, 1, 1, 1)
    assert [r.id for r in read_records(out / "train.jsonl")] == ["img0-1", "img0-2"]
    assert len(next(r for r in read_records(out / "train.jsonl") if r.id == "img0-2").turns) == 4
    repair = server.requests[-1].messages[-1]["content"]
    assert "Question2: 6 question/answer pair(s) (12 turns)" in repair and "Question3: 1 question" in repair
    assert "Question1" not in repair and "Question4" not in repair
    dropped = lines(out / "dropped.jsonl")
    assert [(d["dialogue"], d["why"]) for d in dropped] == [(3, "invalid"), (4, "beyond K")]


def test_an_image_without_any_valid_dialogue_fails_and_is_retried(images, tmp_path):
    short = {"Question1": {"Q1": "one?", "A1": "yes", "Focus": "sign"}}
    out = tmp_path / "out"
    with FakeChatServer(scripted_steps([lambda r: tree(k_of(r))], [short])) as server:
        report = generate_dataset(images, out, client_for(server), limit=1,
                                  constraints=Constraints(repair=False))
    assert (report.completed, report.failed) == (0, 1) and len(server.requests) == 3
    [failure] = lines(out / "failures.jsonl")
    assert failure["step"] == "dialogue" and "no dialogue kept the constraints" in failure["error"]


def test_users_prompt_files_replace_ours_and_are_checked_first(images, tmp_path):
    mine = tmp_path / "tree.txt"
    mine.write_text("# Role: Visual Reasoning Expert\nDesign {{k}} reasoning questions about {{targets}}; JSON {\"root node\": ...}")
    with FakeChatServer(responder()) as server:
        report = generate_dataset(images, tmp_path / "out", client_for(server), limit=1,
                                  prompt_files={"reasoning_tree": mine})
        assert report.prompts["reasoning_tree"] == str(mine)
        tree_request = server.requests[1].text
        assert tree_request.startswith("# Role: Visual Reasoning Expert\nDesign 3 reasoning questions about [")
        bad = tmp_path / "bad.txt"
        bad.write_text("no placeholders here")
        with pytest.raises(ConfigError, match=r"lacks the placeholder\(s\) \{\{k\}\}, \{\{targets\}\}"):
            generate_dataset(images, tmp_path / "out2", client_for(server), prompt_files={"reasoning_tree": bad})
        with pytest.raises(ConfigError, match="unknown prompt name"):
            generate_dataset(images, tmp_path / "out2", client_for(server), prompt_files={"tree": mine})
    assert len(server.requests) == 3 and not (tmp_path / "out2").exists()  # refused before anything was done


def test_cli_command(images, tmp_path, monkeypatch):
    from pixelagent.data.cli import data_app as app
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    out = tmp_path / "out"
    with FakeChatServer(responder()) as server:
        result = CliRunner().invoke(app, ["generate", "--images", str(images), "--out", str(out),
                                          "--base-url", server.base_url, "--limit", "2", "--model", "m1"])
    assert result.exit_code == 0, result.output
    assert "2 image(s) done" in result.output and KEY not in result.output
    assert len(lines(out / "train.jsonl")) == len(ids_for(0, 1))
    assert "dialogues: 5 kept (0 after repair), 0 dropped, 0 beyond K" in result.output
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
