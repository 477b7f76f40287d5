"""The command line, run in-process through ``main`` (the fake plugin registered) and, where
start-up cost matters, as a real subprocess."""

import io
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from pixelagent.cli import main
from pixelagent.mask import Mask


@pytest.fixture
def scene_file(scene, tmp_path):
    path = tmp_path / "scene.png"
    Image.fromarray(scene).save(path)
    return path


def run_cli(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_plugins_json_lists_parts_presets_and_their_plugins(fake, capsys):
    code, out, _ = run_cli(capsys, "plugins", "--json")
    listing = json.loads(out)
    assert code == 0
    assert "fake-plugin" in listing["plugins"] and "pixelagent.builtins" in listing["plugins"]
    rows = {(r["kind"], r["name"]): r for r in listing["parts"] + listing["presets"]}
    assert rows[("preset", "fake")]["aliases"] == ["fake-tiny"]
    assert rows[("preset", "fake")]["parts"]["mask_decoder"] == "fake-decoder"
    assert rows[("visual_encoder", "fake-encoder")]["plugin"] == "fake-plugin"
    assert rows[("visual_encoder", "none")]["plugin"] == "pixelagent.builtins"


def test_plugins_table(fake, capsys):
    code, out, _ = run_cli(capsys, "plugins")
    assert code == 0 and "fake-decoder" in out and "fake-plugin" in out


def test_segment_writes_mask_overlay_and_prints_targets(fake, scene_file, tmp_path, capsys):
    mask_path, overlay_path = tmp_path / "mask.png", tmp_path / "overlay.png"
    code, out, _ = run_cli(capsys, "segment", str(scene_file), "its blue label", "--turn", "the red bottle",
                           "--preset", "fake", "--out", str(mask_path), "--overlay", str(overlay_path))
    assert code == 0
    assert "Sure, it is the blue region." in out and "'the blue region'" in out and "1200 px" in out
    expected = fake.rectangle_mask("blue")
    np.testing.assert_array_equal(Mask.from_png(mask_path).array, expected)
    overlay = np.asarray(Image.open(overlay_path))
    original = np.asarray(Image.open(scene_file))
    assert overlay.shape == original.shape
    assert (overlay[~expected] == original[~expected]).all() and (overlay[expected] != original[expected]).any()


def test_segment_json_has_reply_history_and_intent(fake, scene_file, capsys):
    code, out, _ = run_cli(capsys, "segment", str(scene_file), "the green word", "-t", "the red bottle",
                           "-t", "the blue label", "-p", "fake", "--json")
    data = json.loads(out)
    assert code == 0 and data["image_size"] == [96, 128]
    assert [t["question"] for t in data["history"]] == ["the red bottle", "the blue label", "the green word"]
    assert [f["relation"] for f in data["intent"]["focuses"]] == ["first", "refine", "refine"]
    rle = data["reply"]["targets"][0]["mask"]
    np.testing.assert_array_equal(Mask.from_rle(rle).array, fake.rectangle_mask("green"))


def test_segment_without_target_writes_nothing(fake, scene_file, tmp_path, capsys):
    code, out, err = run_cli(capsys, "segment", str(scene_file), "anything purple?", "-p", "fake",
                             "--out", str(tmp_path / "m.png"))
    assert code == 0 and "no target" in out and "no mask was written" in err
    assert not (tmp_path / "m.png").exists()


@pytest.mark.parametrize("args, message", [
    (["segment", "missing.png", "x", "-p", "fake"], "missing.png: the file does not exist"),
    (["segment", "{scene}", "x", "-p", "no-such-preset"], "unknown preset 'no-such-preset'; available:"),
    (["segment"], "Missing argument"),
    (["bogus"], "No such command"),
])
def test_errors_are_one_line_and_non_zero(fake, scene_file, capsys, args, message):
    code, out, err = run_cli(capsys, *[a.format(scene=scene_file) for a in args])
    assert code != 0
    assert err.startswith("error: ") and message in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_chat_keeps_history_and_runs_slash_commands(fake, scene_file, tmp_path, capsys, monkeypatch):
    saved = tmp_path / "saved"
    script = f"the red bottle\nits blue label\n/intent\n/save {saved}\n/reset\n/intent\n/help\n\n/quit\n"
    monkeypatch.setattr(sys, "stdin", io.StringIO(script))
    code, out, _ = run_cli(capsys, "chat", str(scene_file), "--preset", "fake")
    assert code == 0
    assert "pixelagent> Sure, it is the red region." in out
    assert "turn 2: 'the blue region' (refine, coarse)" in out
    assert "dialogue and intent forgotten" in out and "no focus yet" in out and "/reset" in out
    transcript = json.loads((saved / "session.json").read_text())
    assert [t["question"] for t in transcript["history"]] == ["the red bottle", "its blue label"]
    np.testing.assert_array_equal(Mask.from_png(saved / "turn02_mask.png").array, fake.rectangle_mask("blue"))
    assert (saved / "turn01_overlay.png").exists()


def test_chat_ends_at_end_of_input(fake, scene_file, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO("hello\n"))
    code, out, _ = run_cli(capsys, "chat", str(scene_file), "-p", "fake")
    assert code == 0 and "I see 4 coloured regions." in out


def test_version(capsys):
    from pixelagent import __version__

    assert run_cli(capsys, "--version")[:2] == (0, f"pixelagent {__version__}\n")


def test_help_imports_no_torch():
    probe = ("import sys\nfrom pixelagent.cli import main\ncode = main(['--help'])\n"
             "heavy = sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules)\n"
             "print('HEAVY', heavy, code)\n")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert "Commands" in result.stdout and "segment" in result.stdout
    assert "HEAVY [] 0" in result.stdout, result.stdout + result.stderr


def test_segment_without_a_preset_says_which_model_it_chose(fake, scene_file, capsys, monkeypatch):
    monkeypatch.setenv("PIXELAGENT_PRESET", "fake")
    assert main(["segment", str(scene_file), "the red one", "--json"]) == 0
    captured = capsys.readouterr()
    assert captured.err == "using fake: from $PIXELAGENT_PRESET\n"
    assert json.loads(captured.out)["reply"]["targets"]  # stdout stays machine-readable


def test_new_commands_are_listed_and_serve_help_imports_no_torch():
    probe = ("import sys\nfrom pixelagent.cli import main\ncode = main(['serve', '--help'])\n"
             "heavy = sorted(m for m in ('torch', 'transformers', 'fastapi', 'uvicorn') if m in sys.modules)\n"
             "print('HEAVY', heavy, code)\ncode = main(['--help'])\n")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert "--max-sessions" in result.stdout and "--workers" in result.stdout
    assert "HEAVY [] 0" in result.stdout, result.stdout + result.stderr
    assert all(name in result.stdout for name in ("serve", "batch", "logs"))


def test_serve_refuses_bad_settings_in_one_line(capsys):
    code, _, err = run_cli(capsys, "serve", "--idle-expiry", "0", "--port", "1")
    assert code == 1 and err.startswith("error: invalid serve options: idle_expiry_s:") and err.count("\n") == 1


def test_segment_json_carries_the_schema_version(fake, scene_file, capsys):
    code, out, _ = run_cli(capsys, "segment", str(scene_file), "its blue label", "-t", "the red bottle", "-p", "fake",
                           "--json")
    data = json.loads(out)
    assert code == 0 and data["schema_version"] == 1 and data["reply"]["schema_version"] == 1
    assert data["reply"] == data["history"][-1] and data["reply"]["turn"] == 2
    assert data["reply"]["intent"] == {k: v for k, v in data["intent"]["focuses"][1].items()}
    assert data["intent"]["transitions"][1] == "turn 2: 'the blue region' (refine, coarse)"
    target = data["reply"]["targets"][0]
    assert set(target) == {"phrase", "mask", "bbox", "score", "granularity", "area"}


def test_chat_saves_and_loads_a_session(fake, scene_file, tmp_path, capsys, monkeypatch):
    saved = tmp_path / "saved"
    monkeypatch.setattr(sys, "stdin", io.StringIO(f"the red bottle\nits blue label\n/save {saved}\n/quit\n"))
    assert run_cli(capsys, "chat", str(scene_file), "-p", "fake")[0] == 0
    document = json.loads((saved / "session.json").read_text())
    assert document["format"] == "pixelagent-session" and document["image"]["path"] == str(scene_file.resolve())
    other = tmp_path / "other.png"
    Image.new("RGB", (10, 10)).save(other)
    monkeypatch.setattr(sys, "stdin", io.StringIO(f"/load {saved}\nthe green word\n/intent\n/load {tmp_path}/none\n"
                                                  "/quit\n"))
    code, out, err = run_cli(capsys, "chat", str(other), "-p", "fake")
    assert code == 0 and f"loaded {saved}: 2 turns about {scene_file.resolve()} (128x96)" in out
    assert "turn 3: 'the green region' (refine, medium)" in out  # the dialogue went on from turn 2
    assert err.startswith("error: ") and "does not exist" in err


def test_chat_json_prints_turns_only_on_stdout(fake, scene_file, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO("the red bottle\nhello\n/intent\n"))
    code, out, err = run_cli(capsys, "chat", str(scene_file), "-p", "fake", "--json")
    turns = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and [t["turn"] for t in turns] == [1, 2] and turns[1]["no_target"]
    assert "Talking about" in err and "turn 1: 'the red region'" in err


def test_serve_refuses_an_unknown_preset_at_once(capsys):
    code, _, err = run_cli(capsys, "serve", "--preset", "no-such-preset")
    assert code == 1 and "unknown preset 'no-such-preset'; available:" in err


def test_max_pixels_bounds_the_image_and_zero_lifts_the_bound(fake, scene_file, tmp_path, capsys):
    code, _, err = run_cli(capsys, "segment", str(scene_file), "the red bottle", "-p", "fake", "--max-pixels", "100")
    assert code == 1 and "over the limit of 100 pixels" in err and "--max-pixels 12288" in err
    assert run_cli(capsys, "segment", str(scene_file), "the red bottle", "-p", "fake", "--max-pixels", "0")[0] == 0
    assert run_cli(capsys, "segment", str(scene_file), "the red bottle", "-p", "fake", "--max-pixels", "12288")[0] == 0
    images = tmp_path / "images"
    images.mkdir()
    (images / "scene.png").write_bytes(scene_file.read_bytes())
    code, _, err = run_cli(capsys, "batch", str(images), "--ask", "the red bottle", "-p", "fake",
                           "--out", str(tmp_path / "out"), "--max-pixels", "100")
    assert code == 1 and "failed: scene.png: scene.png is 128x96" in err and "over the limit of 100" in err
    code, _, err = run_cli(capsys, "segment", str(scene_file), "x", "-p", "fake", "--max-pixels", "-1")
    assert code == 2 and "--max-pixels" in err
