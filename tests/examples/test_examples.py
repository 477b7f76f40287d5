"""The Python-app and LangChain examples, run as a user would (offline, with the shipped model)."""

import contextlib
import importlib.util
import io
import json
from pathlib import Path

import pytest
from PIL import Image

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def load(name):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_main(module, *argv):
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        assert module.main(list(argv)) == 0
    return buffer.getvalue()


def test_multiturn_session_saves_an_overlay_per_mask(tmp_path, monkeypatch):
    monkeypatch.delenv("PIXELAGENT_PRESET", raising=False)
    turns = json.loads(run_main(load("multiturn_session"), "--out", str(tmp_path), "--json"))
    assert [t["turn"] for t in turns] == [1, 2, 3]
    with_masks = [t for t in turns if t["overlay"]]
    assert len(with_masks) >= 2
    for turn in with_masks:
        assert Image.open(turn["overlay"]).size == (256, 256)
        assert Image.open(tmp_path / f"turn-{turn['turn']}-mask.png").size == (256, 256)
        assert turn["area"] > 0 and turn["relation"] in {"first", "refine", "broaden", "switch", "same"}
    assert sorted(p.name for p in tmp_path.glob("turn-?.png")) == [f"turn-{t['turn']}.png" for t in with_masks]


def test_multiturn_session_on_a_user_image_and_questions(tmp_path, fake):
    image = tmp_path / "photo.png"
    Image.fromarray(fake.make_scene()).save(image)
    out = run_main(load("multiturn_session"), str(image), "--preset", "fake", "--ask", "the red bottle",
                   "--ask", "its blue label", "--out", str(tmp_path / "o"))
    assert "refine, " in out and (tmp_path / "o" / "turn-2.png").is_file()


def test_langchain_agent_runs_offline_with_the_scripted_model(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("PIXELAGENT_PRESET", raising=False)
    report = json.loads(run_main(load("langchain_agent"), "--json"))
    assert report["chat_model"] == "scripted"
    calls = report["calls"]
    assert calls[0]["request"].startswith("Segment the ") and "its" in calls[1]["request"]
    assert len(calls) == 3 and sum(c["area"] is not None and c["area"] > 0 for c in calls) >= 2
    assert report["answer"].startswith("Done")


def test_langchain_agent_helpers_with_a_fake_tool_model(fake, scene):
    from pixelagent import Agent
    from pixelagent.tools.langchain import PixelAgentTool

    example = load("langchain_agent")
    tool = PixelAgentTool.for_image(Agent("fake"), scene)
    messages = example.run_agent(example.scripted_model(["the red bottle", "its blue label"], "ok"), tool, "go")
    rows = example.summary(messages)
    assert [r["phrase"] for r in rows] == ["the red region", "the blue region"]
    assert all(r["area"] > 0 for r in rows) and messages[-1].content == "ok"


@pytest.mark.parametrize("name", ["multiturn_session", "langchain_agent"])
def test_examples_print_one_line_for_a_missing_file(name, tmp_path):
    import subprocess
    import sys

    result = subprocess.run([sys.executable, str(EXAMPLES / f"{name}.py"), str(tmp_path / "missing.jpg")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [f"error: {tmp_path / 'missing.jpg'}: the file does not exist; check the path"]
