"""The warm CLI: ``pixelagent serve`` as a real process, and ``segment`` / ``chat`` / ``batch``
talking to it with ``--server`` (or ``$PIXELAGENT_SERVER``), without loading a model."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from pixelagent import Session
from pixelagent.cli import main
from pixelagent.mask import Mask
from pixelagent.schema import SessionRecord, session_record
from pixelagent.server.testing import free_port
from cli_runner import run_cli  # noqa: E402  (tests/ is on sys.path)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """``pixelagent serve`` in its own process; yields (url, the /health statuses seen while starting)."""
    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    command = [sys.executable, "-m", "pixelagent", "serve", "--preset", "miras-tiny", "--device", "cpu",
               "--port", str(port), "--workers", "2"]
    with open(log, "wb") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT,
                                   env={**os.environ, "PIXELAGENT_LOG": ""})
    url, seen = f"http://127.0.0.1:{port}", []
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            assert process.poll() is None, log.read_text()
            try:
                response = httpx.get(url + "/health", timeout=2)
            except httpx.TransportError:
                time.sleep(0.05)
                continue
            seen.append((response.status_code, response.json()["status"]))
            if response.status_code == 200:
                break
            if response.json()["status"] == "failed":
                pytest.fail(f"the server's model failed to load: {response.json()['error']}")
            time.sleep(0.05)
        yield url, seen
    finally:
        process.send_signal(signal.SIGINT)
        code = process.wait(timeout=30)
        text = log.read_text()
        assert code == 0 and "Traceback" not in text, text


@pytest.fixture
def image_file(tmp_path, scene_png):
    path = tmp_path / "scene.png"
    path.write_bytes(scene_png)
    return path


def test_serve_says_503_until_the_model_is_loaded(served):
    url, seen = served
    assert seen[0] == (503, "loading") and seen[-1] == (200, "ok")


def test_segment_with_server_prints_what_a_local_run_prints(served, image_file, tmp_path, capsys, tiny_agent,
                                                           tiny_scene):
    url, _ = served
    first, second = tiny_scene.requests[:2]
    code, out, _ = run_cli(capsys, "segment", str(image_file), second, "--turn", first, "--server", url, "--json",
                           "--out", str(tmp_path / "mask.png"), "--overlay", str(tmp_path / "overlay.png"))
    assert code == 0
    remote = SessionRecord.model_validate_json(out)
    local = tiny_agent.session(tiny_scene.image)
    local.ask(first), local.ask(second)
    assert remote.model_dump(exclude={"history": {"__all__": {"time"}}, "reply": {"time"}}) == \
        session_record(local).model_dump(exclude={"history": {"__all__": {"time"}}, "reply": {"time"}})
    assert Mask.from_png(tmp_path / "mask.png") == local.history[-1].reply.mask
    assert (tmp_path / "overlay.png").exists()
    assert httpx.get(url + "/health").json()["sessions"] == 0  # the CLI deleted its session

    code, text, _ = run_cli(capsys, "segment", str(image_file), first, "--server", url)
    assert code == 0 and "target 'the orange book at the top'" in text


def test_a_warm_call_imports_no_torch_and_takes_no_model_load(served, image_file, tiny_scene):
    url, _ = served
    probe = ("import sys, time\nfrom pixelagent.cli import main\nstarted = time.perf_counter()\n"
             f"code = main(['segment', {str(image_file)!r}, {tiny_scene.requests[0]!r}, '--server', {url!r}])\n"
             "print('RESULT', code, 'torch' in sys.modules, round(time.perf_counter() - started, 3))\n")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    line = next(l for l in result.stdout.splitlines() if l.startswith("RESULT"))
    _, code, torch_loaded, seconds = line.split()
    # no torch in the client process means no model was loaded there: the turn ran on the server
    # (timings are the benchmarks' business: bench figures are in the README)
    assert (code, torch_loaded) == ("0", "False"), result.stdout + result.stderr
    assert float(seconds) > 0


def test_the_server_comes_from_the_environment_and_presets_must_agree(served, image_file, capsys, monkeypatch):
    url, _ = served
    monkeypatch.setenv("PIXELAGENT_SERVER", url)
    code, out, _ = run_cli(capsys, "segment", str(image_file), "hello", "--json")
    assert code == 0 and json.loads(out)["history"][0]["question"] == "hello"
    code, _, err = run_cli(capsys, "segment", str(image_file), "hello", "--preset", "lisa-tiny")
    assert code == 1 and err.startswith("error: the server at") and "runs miras-tiny, not lisa-tiny" in err
    code, _, err = run_cli(capsys, "segment", str(image_file), "", "--server", url)
    assert code == 1 and err == "error: the question is empty; ask something about the image\n"


def test_an_unreachable_server_is_one_line(image_file, capsys):
    code, _, err = run_cli(capsys, "segment", str(image_file), "hello", "--server", f"http://127.0.0.1:{free_port()}")
    assert code == 1 and err.count("\n") == 1 and "cannot reach the pixelagent server at http://127.0.0.1:" in err
    code, _, err = run_cli(capsys, "segment", str(image_file), "hello", "--server", "localhost:8000")
    assert code == 1 and "is not an http:// or https:// URL" in err


def test_chat_with_server_saves_a_session_that_loads_here(served, image_file, tmp_path, capsys, monkeypatch,
                                                          tiny_agent, tiny_scene):
    url, _ = served
    saved = tmp_path / "saved"
    script = "\n".join([*tiny_scene.requests[:2], "/intent", f"/save {saved}", f"/load {saved}", "/reset",
                        "/intent", "/quit"]) + "\n"
    monkeypatch.setattr(sys, "stdin", io.StringIO(script))
    code, out, err = run_cli(capsys, "chat", str(image_file), "--server", url)
    assert code == 0
    assert "pixelagent> The segmentation shows the orange book at the top." in out
    assert "turn 2: 'the title panel of the orange book' (refine, medium)" in out
    assert f"saved to {saved}" in out and "no focus yet" in out
    assert "error: /load needs the model in this process" in err
    session = Session.load(saved, tiny_agent)
    assert [t.question for t in session.history] == tiny_scene.requests[:2]
    assert session.image_path == image_file.resolve()
    assert (saved / "turn02_mask.png").exists() and (saved / "turn02_overlay.png").exists()


def test_chat_json_prints_one_turn_per_line(served, image_file, capsys, monkeypatch, tiny_scene):
    url, _ = served
    monkeypatch.setattr(sys, "stdin", io.StringIO(f"{tiny_scene.requests[0]}\n/intent\n"))
    code, out, err = run_cli(capsys, "chat", str(image_file), "--server", url, "--json")
    assert code == 0
    (line,) = out.splitlines()
    assert json.loads(line)["schema_version"] == 1 and json.loads(line)["intent"]["relation"] == "first"
    assert "turn 1:" in err  # commands answer on stderr, so stdout stays JSON Lines


def test_batch_with_server(served, tmp_path, scene_png, capsys, tiny_scene):
    url, _ = served
    images = tmp_path / "images"
    images.mkdir()
    for name in ("a.png", "b.png"):
        (images / name).write_bytes(scene_png)
    code, out, _ = run_cli(capsys, "batch", str(images), "--ask", tiny_scene.requests[0], "--ask",
                           tiny_scene.requests[1], "--out", str(tmp_path / "out"), "--server", url, "--json")
    assert code == 0
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["image"] for r in records] == ["a.png", "b.png"]
    assert [f["relation"] for f in records[0]["intent"]["focuses"]] == ["first", "refine"]
    assert (tmp_path / "out" / "b" / "turn02_overlay.png").exists()
