"""The conversation log: turns with their masks' RLE in SQLite, written by the CLI, read by ``pixelagent logs``."""

import io
import json
import sqlite3
import sys
import threading

import numpy as np
import pytest
from PIL import Image

from pixelagent import Agent
from pixelagent.errors import ConfigError
from pixelagent.logs import TurnLog, open_log
from pixelagent.mask import Mask
from pixelagent.schema import turn_record
from cli_runner import run_cli  # noqa: E402  (tests/ is on sys.path)


@pytest.fixture
def scene_file(scene, tmp_path):
    path = tmp_path / "scene.png"
    Image.fromarray(scene).save(path)
    return path


def test_record_and_read_back_with_masks(fake, scene, tmp_path):
    session = Agent("fake").session(scene)
    with TurnLog(tmp_path / "log.db") as log:
        for question in ("the red bottle", "its blue label"):
            session.ask(question)
            log.record(turn_record(session.history[-1], session.intent), conversation="c1", source="test",
                       preset="fake", image="scene.png")
        entries = log.entries()
        assert [e["turn"]["turn"] for e in entries] == [1, 2]  # oldest first
        assert log.entries(limit=1)[0]["turn"]["question"] == "its blue label"
        assert log.entries(conversation="other") == []
    mask = Mask.from_rle(entries[1]["turn"]["targets"][0]["mask"])
    np.testing.assert_array_equal(mask.array, fake.rectangle_mask("blue"))
    assert entries[1]["turn"]["intent"]["relation"] == "refine"


def test_threads_share_one_log(fake, scene, tmp_path):
    session = Agent("fake").session(scene)
    session.ask("red")
    record = turn_record(session.history[-1], session.intent)
    log = TurnLog(tmp_path / "log.db")
    threads = [threading.Thread(target=lambda n=n: [log.record(record, conversation=f"t{n}", source="x", preset="p",
                                                               image="i") for _ in range(20)]) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(log.entries(limit=None)) == 80
    log.close()


def test_segment_and_chat_log_turns_and_logs_prints_them(fake, scene_file, tmp_path, capsys, monkeypatch):
    db = tmp_path / "log.db"
    assert run_cli(capsys, "segment", str(scene_file), "its blue label", "-t", "the red bottle", "-p", "fake",
                   "--log", str(db))[0] == 0
    monkeypatch.setenv("PIXELAGENT_LOG", str(db))
    monkeypatch.setattr(sys, "stdin", io.StringIO("the green word\n/reset\nthe yellow sign\n/quit\n"))
    assert run_cli(capsys, "chat", str(scene_file), "-p", "fake")[0] == 0
    code, out, _ = run_cli(capsys, "logs", "--json")
    entries = json.loads(out)
    assert code == 0 and [e["source"] for e in entries] == ["segment", "segment", "chat", "chat"]
    assert [e["turn"]["question"] for e in entries] == ["the red bottle", "its blue label", "the green word",
                                                        "the yellow sign"]
    conversations = [e["conversation"] for e in entries]
    assert conversations[0] == conversations[1] != conversations[2] != conversations[3]  # /reset: a new one
    code, out, _ = run_cli(capsys, "logs", "-n", "1", "--db", str(db))
    assert code == 0 and "you:   the yellow sign" in out and "'the yellow region' (coarse" in out
    assert "the green word" not in out
    code, out, _ = run_cli(capsys, "logs", "--conversation", conversations[0])
    assert out.count("you:") == 2


def test_logs_refuses_what_is_not_a_log(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("PIXELAGENT_LOG", raising=False)
    code, _, err = run_cli(capsys, "logs")
    assert code == 1 and "no log to read: pass --db PATH or set $PIXELAGENT_LOG" in err
    (tmp_path / "text.db").write_text("hello")
    other = sqlite3.connect(tmp_path / "other.db")
    other.execute("CREATE TABLE things (x)")
    other.commit()
    other.close()
    for path, words in [(tmp_path / "text.db", "not a database"), (tmp_path / "other.db", "something else"),
                        (tmp_path / "missing.db", "does not exist")]:
        code, _, err = run_cli(capsys, "logs", "--db", str(path))
        assert code == 1 and err.startswith("error: ") and words in err and err.count("\n") == 1
    assert open_log(None) is None
    with pytest.raises(ConfigError, match="not a regular file"):
        TurnLog(tmp_path)


def test_logs_shows_control_characters_in_a_logged_question_as_escapes(fake, scene_file, tmp_path, capsys):
    db = tmp_path / "log.db"
    hostile = "the red bottle\rFAKE LINE\x07\x1b[2J\x9b"
    assert run_cli(capsys, "segment", str(scene_file), hostile, "-p", "fake", "--log", str(db))[0] == 0
    code, out, _ = run_cli(capsys, "logs", "--db", str(db))
    assert code == 0 and "you:   the red bottle\\x0dFAKE LINE\\x07\\x1b[2J\\x9b" in out
    assert not any(c in out for c in "\r\x07\x1b\x9b")
    assert json.loads(run_cli(capsys, "logs", "--json", "--db", str(db))[1])[0]["turn"]["question"] == hostile
