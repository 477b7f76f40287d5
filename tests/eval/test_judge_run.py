"""Judging into a file, resumably, and the ``judge-prist`` recipe on an evaluated split."""

from __future__ import annotations

import json

import pytest

import chat_clients
from pixelagent.cli import main
from pixelagent.eval.judge_run import JudgeItem, read_scores, run_judge, scores_for
from pixelagent.llm.testing import FakeChatServer, FakeReply

KEY = "sk-judge-run-7"


def reply(pr, lc, cc, tr):
    return json.dumps({"scores": [{"name": "progression_score", "score": pr},
                                  {"name": "logical_coherence_score", "score": lc},
                                  {"name": "content_consistency_score", "score": cc},
                                  {"name": "focal_goal_relevance_score", "score": tr},
                                  {"name": "total_score", "score": pr + lc + cc + tr}], "summary": "ok"})


def item(key, marker=None):
    return JudgeItem(key=key, dialogue=[{"role": "user", "text": f"What is it? ({marker or key})"},
                                        {"role": "assistant", "text": "A sign."}], focus="the sign")


def test_a_judged_split_resumes_and_retries_only_what_failed(tmp_path):
    path = tmp_path / "judge.jsonl"
    broken = {"b"}

    def judge(request):
        if any(f"({k})" in request.text for k in broken):
            return FakeReply(status=500, content="overloaded")
        return reply(4, 4, 3, 5)

    items = [item("a"), item("b"), item("c")]
    with FakeChatServer(judge) as server:
        client = chat_clients.client_for(server, KEY, max_retries=0)
        first = run_judge(client, items, path, repeats=2)
        assert (first.scored, first.failed, first.skipped_done) == (2, 1, 0)
        with path.open("a") as handle:
            handle.write('{"key": "x", "scores": ')  # a torn last line (killed mid-write)
        broken.clear()
        before = len(server.requests)
        second = run_judge(chat_clients.client_for(server, KEY), items, path, repeats=2)
        assert (second.scored, second.failed, second.skipped_done, second.unreadable) == (1, 0, 2, 1)
        assert len(server.requests) - before == 2  # only "b", twice
    found, unreadable = read_scores(path)
    assert set(found) == {"a", "b", "c"} and unreadable == 1  # the torn line was ended and is ignored
    split = scores_for(path, ["a", "b", "c", "never"])
    assert split.scored == 3 and split.failures[0].error == "not judged yet"
    assert split.as_dict() == {"PR": 4.0, "LC": 4.0, "CC": 3.0, "TR": 5.0}
    assert KEY not in path.read_text()


def test_flags_survive_the_file(tmp_path):
    path = tmp_path / "judge.jsonl"
    with FakeChatServer(lambda request: reply(9, 4, 4, 4)) as server:
        report = run_judge(chat_clients.client_for(server, KEY), [item("a")], path, repeats=1)
    assert report.flagged == 1
    found, _ = read_scores(path)
    assert found["a"].pr == 5.0 and found["a"].flags == ["run 1: PR 9 is outside 0-5 (clamped to 5)"]


@pytest.fixture
def evaluated(fake, tmp_path):
    """A PRIST-Synth split evaluated by the fake preset."""
    from pixelagent.data.synth import SynthConfig, synthesize

    data = tmp_path / "data"
    synthesize(data, SynthConfig(n=6, size=128, seed=5, samples_per_image=2, splits=(0.0, 0.0, 1.0)))
    out = tmp_path / "eval"
    assert main(["recipe", "eval-prist", "--preset", "fake", "--data", str(data), "--out", str(out),
                 "--metrics", "none"]) == 0
    return data, out


def test_the_judge_recipe_scores_both_sides_and_resumes(evaluated, monkeypatch, capsys):
    data, out = evaluated

    def judge(request):
        side = 5 if "coloured regions" in request.text or "region" in request.text else 2
        return reply(side, side, side, side) if "Assistant:" in request.text else "?"

    with FakeChatServer(judge) as server:
        monkeypatch.setenv("OPENAI_API_KEY", KEY)
        args = ["recipe", "judge-prist", "--eval", str(out), "--data", str(data), "--base-url", server.base_url,
                "--repeats", "2"]
        assert main(args) == 0
        summary = json.loads((out / "judge" / "judge.json").read_text())
        assert summary["dialogues"] == 6 and summary["scored"] == 12 and summary["failed"] == 0
        assert len(server.requests) == 24 and all(r.image_urls for r in server.requests)
        assert summary["win_rate"]["wins"] + summary["win_rate"]["ties"] + summary["win_rate"]["losses"] == 6
        table = (out / "judge" / "table4.md").read_text()
        assert table.startswith("| Model | PR | LC | CC | TR | Win Rate(%) |") and "| reference |" in table
        assert main(args) == 0 and len(server.requests) == 24  # everything judged: nothing asked again
    assert "12 dialogues judged" in capsys.readouterr().out


def test_the_judge_recipe_lists_missing_images_and_reports_failures(evaluated, monkeypatch, capsys, tmp_path):
    data, out = evaluated
    first = sorted((data / "images").iterdir())[0]
    first.rename(tmp_path / "moved.png")
    with FakeChatServer(lambda request: "not json") as server:
        monkeypatch.setenv("OPENAI_API_KEY", KEY)
        code = main(["recipe", "judge-prist", "--eval", str(out), "--data", str(data), "--base-url",
                     server.base_url, "--repeats", "1", "--no-win-rate", "--out", str(tmp_path / "j")])
    err = capsys.readouterr().err
    assert code == 1 and "skipped synth-" in err and "does not exist (or pass --no-image)" in err
    assert "error: 4 dialogue(s) could not be judged" in err and "rerun the same command" in err
    lines = [json.loads(line) for line in (tmp_path / "j" / "judge.jsonl").read_text().splitlines()]
    assert len(lines) == 4 and all("error" in line for line in lines)
