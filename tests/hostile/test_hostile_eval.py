"""Hostile input to the evaluation: judge replies, prompt files, images, predictions files.

Each case must end in a clear one-line error, or in the right result (the bad part recorded
and skipped, the rest kept), within its time limit and under the suite's memory ceiling; see
``conftest.py``.
"""

from __future__ import annotations

import json
import os

import pytest

import chat_clients
from pixelagent.data.prompts import load_prompt
from pixelagent.errors import ConfigError, LLMSchemaError
from pixelagent.eval.judge import JudgeReply, judge_dialogue, judge_split
from pixelagent.llm.client import parse_json_reply
from pixelagent.llm.testing import FakeChatServer, FakeReply

KEY = "sk-hostile-eval-1"
DIALOGUE = [{"role": "user", "text": "What is on the sign?"}, {"role": "assistant", "text": "It says OPEN."}]


def client_for(server):
    return chat_clients.client_for(server, KEY, max_retries=0)


def good(pr=3, lc=3, cc=3, tr=3):
    return json.dumps({"scores": [{"name": "PR", "score": pr}, {"name": "LC", "score": lc},
                                  {"name": "CC", "score": cc}, {"name": "TR", "score": tr}]})


# -- malformed judge replies ----------------------------------------------------------------------
MALFORMED = {
    "not json": "I would rate this conversation highly.",
    "empty": "",
    "a bare number": "4",
    "nested deep": "[" * 5000 + "]" * 5000,
    "booleans": json.dumps({"PR": True, "LC": True, "CC": True, "TR": True}),
    "NaN": '{"PR": NaN, "LC": 1, "CC": 1, "TR": 1}',
    "words": json.dumps({"PR": "excellent", "LC": 1, "CC": 1, "TR": 1}),
    "list of junk": json.dumps([1, "two", None, []]),
    "null scores": json.dumps({"scores": None}),
    "huge": json.dumps({"summary": "x" * 2_000_000}),
}


@pytest.mark.hostile("evaluation")
@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_a_malformed_judge_reply_is_one_line_and_the_split_keeps_the_rest(name, expect_clear_error):
    bad = MALFORMED[name]

    def judge(request):
        return bad if "(bad)" in request.text else good()

    with FakeChatServer(judge) as server:
        expect_clear_error(lambda: judge_dialogue(client_for(server), DIALOGUE + [
            {"role": "user", "text": "(bad)"}], repeats=1), "JudgeReply", kind=LLMSchemaError)
        split = judge_split(client_for(server), [DIALOGUE, DIALOGUE + [{"role": "user", "text": "(bad)"}]],
                            repeats=1)
    assert split.scored == 1 and [f.index for f in split.failures] == [1]
    assert "\n" not in split.failures[0].error


@pytest.mark.hostile("evaluation", expect="result")
@pytest.mark.parametrize("scores, flagged", [
    ((7, 3, 3, 3), "PR 7 is outside 0-5 (clamped to 5)"),
    ((3, -2.5, 3, 3), "LC -2.5 is outside 0-5 (clamped to 0)"),
    ((3, 3, 1e308, 3), "CC 1e+308 is outside 0-5 (clamped to 5)"),
    ((3, 3, 3, "Infinity"), "TR inf is outside 0-5 (clamped to 5)"),
    ((3, 3, 3, "-12/5"), "TR -12 is outside 0-5 (clamped to 0)"),
])
def test_out_of_range_scores_are_clamped_and_flagged(scores, flagged):
    reply = parse_json_reply(good(*scores), JudgeReply)
    assert 0 <= min(reply.pr, reply.lc, reply.cc, reply.tr) and max(reply.pr, reply.lc, reply.cc, reply.tr) <= 5
    assert reply.flags == [flagged]


# -- prompt files -------------------------------------------------------------------------------------
def prompt_file(tmp_path, content: bytes | str):
    path = tmp_path / "prompt.txt"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


@pytest.mark.hostile("evaluation")
@pytest.mark.parametrize("name, content, words", [
    ("judge", None, ("judge prompt file", "does not exist")),
    ("judge", b"\xff\xfe{{dialogue}} in UTF-16?", ("not utf-8",)),
    ("judge", "Score the conversation, please.", ("lacks the placeholder", "{{dialogue}}")),
    ("judge", "{{dialogue}} for {{target}}", ("uses {{target}}", "it fills:", "{{focus}}")),
    ("judge", "   \n\t", ("is empty",)),
    ("reasoning_tree", "Design {{k}} questions.", ("lacks", "{{targets}}", "the K target elements")),
    ("dialogue", "{{elements}} only", ("lacks", "{{tree}}")),
    ("segmentation_c3", "Box it {{box}}", ("uses {{box}}", "{{height}}, {{width}}")),
    ("judge", "x" * ((1 << 20) + 1) + "{{dialogue}}", ("over the", "byte limit")),
])
def test_a_users_prompt_file_is_checked_before_use(name, content, words, tmp_path, expect_clear_error):
    path = tmp_path / "missing.txt" if content is None else prompt_file(tmp_path, content)
    expect_clear_error(lambda: load_prompt(name, path), *words, kind=ConfigError, within_s=1.0)


@pytest.mark.hostile("evaluation")
def test_a_fifo_as_a_prompt_file_is_refused_without_blocking(tmp_path, expect_clear_error):
    fifo = tmp_path / "prompt.fifo"
    os.mkfifo(fifo)
    expect_clear_error(lambda: load_prompt("judge", fifo), "FIFO", kind=ConfigError, within_s=1.0)


@pytest.mark.hostile("evaluation")
def test_a_bad_prompt_file_through_the_cli_is_one_line(cli, tmp_path):
    (tmp_path / "images").mkdir()
    bad = prompt_file(tmp_path, "no placeholders")
    code, _, err = cli("data", "generate", "--images", str(tmp_path / "images"), "--out", str(tmp_path / "out"),
                       "--tree-prompt", str(bad), "--base-url", "http://127.0.0.1:9/v1")
    assert code == 1 and "lacks the placeholder(s) {{k}}, {{targets}}" in err


# -- images and predictions files -----------------------------------------------------------------------
@pytest.fixture
def split(tmp_path):
    from pixelagent.data.synth import SynthConfig, synthesize

    data = tmp_path / "data"
    synthesize(data, SynthConfig(n=4, size=128, seed=6, samples_per_image=2, splits=(0.0, 0.0, 1.0)))
    return data


def eval_prist(cli, data, out, *extra):
    return cli("recipe", "eval-prist", "--preset", "fake", "--data", str(data), "--out", str(out),
               "--metrics", "none", *extra)


@pytest.mark.hostile("evaluation", expect="result")
def test_missing_and_undecodable_images_are_listed_and_skipped(fake, cli, split, tmp_path):
    images = sorted((split / "images").iterdir())
    images[0].unlink()
    images[1].write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(200))  # a PNG header, then noise
    code, out, err = eval_prist(cli, split, tmp_path / "out")
    assert code == 1 and err.count("skipped synth-") == 4 and "does not exist" in err and "cannot be read" in err
    assert "error: 4 of 4 dialogues skipped" in err
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["samples"] == 0 and len(metrics["skipped"]) == 4


@pytest.mark.hostile("evaluation", expect="result")
def test_torn_and_garbage_prediction_lines_are_redone(fake, cli, split, tmp_path):
    out = tmp_path / "out"
    assert eval_prist(cli, split, out)[0] == 0
    path = out / "predictions.jsonl"
    lines = path.read_text().splitlines()
    garbage = ['{"id": "x", "answers": [1], "masks": []}', "[" * 10000, '{"id": "y", "answers": [], "masks": '
               '[], "named": [true]}', json.dumps({**json.loads(lines[1]), "targets": [["no"]]}), lines[2][:40]]
    path.write_text(lines[0] + "\n" + "\n".join(garbage))
    code, _, _ = eval_prist(cli, split, out)
    assert code == 0
    kept = [json.loads(line)["id"] for line in path.read_text().splitlines()[len(garbage) + 1:]]
    assert sorted(kept) == sorted(json.loads(line)["id"] for line in lines[1:])  # every bad one run again
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["samples"] == 4 and metrics["unreadable_prediction_lines"] == len(garbage)


@pytest.mark.hostile("evaluation")
def test_a_predictions_file_that_is_not_text_is_one_line(fake, cli, split, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "predictions.jsonl").write_bytes(b"\x00\xff" * 1000)
    code, _, err = eval_prist(cli, split, out)
    assert code == 1 and "predictions file" in err and "not UTF-8" in err


@pytest.mark.hostile("evaluation")
def test_an_images_folder_that_is_a_file_is_one_line(fake, cli, split, tmp_path):
    not_a_folder = tmp_path / "images.txt"
    not_a_folder.write_text("x")
    code, _, err = eval_prist(cli, split, tmp_path / "out", "--images", str(not_a_folder))
    assert code == 1 and "--images" in err and "is not a folder" in err


@pytest.mark.hostile("evaluation", expect="result")
def test_garbage_in_a_judge_results_file_is_ignored_and_judged_again(tmp_path):
    from pixelagent.eval.judge_run import JudgeItem, read_scores, run_judge

    path = tmp_path / "judge.jsonl"
    path.write_bytes(b'{"key": "a", "scores": {"pr": "x"}}\n[[[[\n{"key": 5}\n{"key": "a", "error": 7}\n')
    items = [JudgeItem(key="a", dialogue=DIALOGUE)]
    with FakeChatServer(lambda request: good(4, 4, 4, 4)) as server:
        report = run_judge(client_for(server), items, path, repeats=1)
    assert (report.unreadable, report.scored) == (4, 1)
    found, _ = read_scores(path)
    assert found["a"].total == 16.0


@pytest.mark.hostile("evaluation")
def test_a_judge_endpoint_that_answers_with_an_error_page_is_recorded(tmp_path):
    page = FakeReply(status=502, body="<html>" + "bad gateway " * 10000 + "</html>")
    with FakeChatServer(lambda request: page if "(bad)" in request.text else good()) as server:
        split = judge_split(client_for(server), [DIALOGUE, DIALOGUE + [{"role": "user", "text": "(bad)"}]],
                            repeats=1)
    assert split.scored == 1 and "HTTP 502" in split.failures[0].error and len(split.failures[0].error) < 800


@pytest.mark.hostile("evaluation")
def test_an_image_that_is_a_fifo_is_refused_not_waited_on(fake, cli, split, tmp_path):
    images = sorted((split / "images").iterdir())
    images[0].unlink()
    os.mkfifo(images[0])
    code, _, err = eval_prist(cli, split, tmp_path / "out")
    assert code == 1 and "FIFO" in err
