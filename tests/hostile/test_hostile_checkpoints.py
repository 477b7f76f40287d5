"""Hostile checkpoints and saved models through the real entry points.

``pixelagent recipe train-stage1`` resumes past damaged checkpoints and says which it used,
refuses clearly when none is intact, reports a full disk (a real, small tmpfs) as such and
leaves no partial folder; ``Agent(dir)`` and ``pixelagent segment --preset DIR`` refuse damaged
saved models in one line; config files that are FIFOs or not UTF-8 fail at once.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml


checkpoints = pytest.mark.hostile("checkpoints", timeout=60)
RECIPE = ("recipe", "train-stage1")


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    from pixelagent.data.synth import SynthConfig, synthesize

    out = tmp_path_factory.mktemp("synth")
    synthesize(out, SynthConfig(n=6, size=128, seed=0, min_turns=1, max_turns=1))
    return out


def run_config(synth: Path, output: Path, max_steps: int = 3, keep: int = 2) -> dict:
    return {"preset": "miras-tiny", "output_dir": str(output), "device": "cpu", "precision": "fp32", "seed": 0,
            "data": {"sources": {"synth": {"type": "prist", "dataset_dir": str(synth), "split": "train"}}},
            "optim": {"lr": 3e-3, "warmup_steps": 1, "max_steps": max_steps, "batch_size": 1, "micro_batch_size": 1},
            "checkpoint": {"every": 1, "keep": keep}, "log": {"every": 1, "tensorboard": False}}


@pytest.fixture(scope="module")
def config_file(synth, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("config") / "tiny.yaml"
    path.write_text(yaml.safe_dump(run_config(synth, path.parent / "unused")))
    return path


@pytest.fixture(scope="module")
def finished_run(synth, tmp_path_factory) -> Path:
    """A real 3-step run: checkpoints step-1 and step-2, and final/."""
    from pixelagent.training.config import validate_config
    from pixelagent.training.loop import Trainer

    output = tmp_path_factory.mktemp("finished") / "run"
    Trainer(validate_config(run_config(synth, output), "finished")).run()
    return output


def copy_run(finished_run: Path, target: Path) -> Path:
    shutil.copytree(finished_run, target, ignore=shutil.ignore_patterns("final"))
    return target


def checkpoint(output: Path, step: int) -> Path:
    return output / "checkpoints" / f"step-{step:08d}"


def logged_steps(output: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (output / "metrics.jsonl").read_text().splitlines()]


# -- damaged checkpoints: the newest intact one is used -------------------------------------------
@checkpoints
@pytest.mark.parametrize("name, keep", [("trainable.safetensors", 0.5), ("trainer_state.pt", 0.5),
                                        ("meta.json", 0.5)])
def test_a_truncated_newest_checkpoint_falls_back_to_the_older_one(finished_run, config_file, tmp_path, cli,
                                                                   name, keep):
    output = copy_run(finished_run, tmp_path / "run")
    damaged = checkpoint(output, 2) / name
    os.truncate(damaged, int(damaged.stat().st_size * keep))
    code, out, err = cli(*RECIPE, "--config", str(config_file), f"output_dir={output}", "--resume")
    assert code == 0, err
    assert f"skipping damaged checkpoint {checkpoint(output, 2)}: {name}" in err
    assert f"resuming from checkpoint {checkpoint(output, 1)} (step 1)" in err
    assert "final model:" in out and (output / "final" / "model.safetensors").is_file()
    assert logged_steps(output) == [1, 2, 3]  # step 2 and 3 redone, each logged once


@checkpoints
def test_every_checkpoint_damaged_is_one_clear_error(finished_run, config_file, tmp_path, cli):
    output = copy_run(finished_run, tmp_path / "run")
    (checkpoint(output, 2) / "meta.json").write_bytes(b"\xff\xfe garbage")
    (checkpoint(output, 1) / "trainer_state.pt").write_bytes(b"not a torch file")
    before = sorted(str(p.relative_to(output)) for p in output.rglob("*"))
    code, out, err = cli(*RECIPE, "--config", str(config_file), f"output_dir={output}", "--resume")
    assert code == 1
    line = next(line for line in err.splitlines() if line.startswith("error:"))
    assert f"no intact checkpoint under {output / 'checkpoints'}" in line
    assert "step-00000002 (meta.json" in line and "step-00000001 (trainer_state.pt" in line
    assert "delete the damaged" in line and "output_dir" in line
    assert sorted(str(p.relative_to(output)) for p in output.rglob("*")) == before  # nothing deleted


@checkpoints
def test_a_rerun_without_resume_over_damaged_checkpoints_still_asks_for_resume(finished_run, config_file,
                                                                               tmp_path, cli):
    output = copy_run(finished_run, tmp_path / "run")
    for step in (1, 2):
        (checkpoint(output, step) / "meta.json").unlink()
    code, _, err = cli(*RECIPE, "--config", str(config_file), f"output_dir={output}")
    assert code == 1 and "already has checkpoints; pass --resume" in err


# -- a full disk ------------------------------------------------------------------------------------
DISK_FULL_SCRIPT = textwrap.dedent("""
    import contextlib, io, json, shutil, sys
    from pathlib import Path
    from pixelagent.cli import main
    output, rescue, argv = Path(sys.argv[1]), Path(sys.argv[2]), json.loads(sys.argv[3])
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(argv)
    listing = sorted(p.name for p in (output / "checkpoints").iterdir())
    shutil.copytree(output, rescue)
    print(json.dumps({"code": code, "err": err.getvalue(), "listing": listing}))
""")


def _mount_tmpfs(directory: Path, size: str) -> bool:
    try:
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(directory)],
                                capture_output=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return False
    return result.returncode == 0


def _disk_full_in_a_namespace(small: Path, size: str, output: Path, rescue: Path, argv: list[str]) -> dict:
    """The same run in a user + mount namespace (``unshare -rm``), where anyone may mount a tmpfs."""
    if shutil.which("unshare") is None:
        pytest.skip("a full disk needs a small tmpfs: mount -t tmpfs is not permitted and unshare is missing")
    command = (f"mount -t tmpfs -o size={size} tmpfs {small} && exec {sys.executable} -c "
               f"{_quote(DISK_FULL_SCRIPT)} {_quote(str(output))} {_quote(str(rescue))} {_quote(json.dumps(argv))}")
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=1m tmpfs {small}"],
                           capture_output=True, timeout=20)
    if probe.returncode != 0:
        pytest.skip("a full disk needs a small tmpfs: neither mount -t tmpfs nor unshare -rm is permitted here "
                    f"({probe.stderr.decode(errors='replace').strip()})")
    result = subprocess.run(["unshare", "-rm", "sh", "-c", command], capture_output=True, text=True, timeout=50)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def _quote(text: str) -> str:
    return shlex.quote(text)


@checkpoints
def test_a_full_disk_is_reported_as_such_and_leaves_no_partial_folder(synth, tmp_path, cli):
    # one checkpoint (~55 MB) fits, the second does not: step 2's write runs out of space
    size, small = "80m", tmp_path / "small"
    small.mkdir()
    output, rescue = small / "run", tmp_path / "rescued"
    config = tmp_path / "full.yaml"
    config.write_text(yaml.safe_dump(run_config(synth, output, max_steps=3, keep=1)))
    argv = [*RECIPE, "--config", str(config)]
    if _mount_tmpfs(small, size):
        try:
            code, _, err = cli(*argv)
            listing = sorted(p.name for p in (output / "checkpoints").iterdir())
            shutil.copytree(output, rescue)
        finally:
            subprocess.run(["umount", "-l", str(small)], check=True, timeout=20)  # lazy: never masks a failure
    else:
        found = _disk_full_in_a_namespace(small, size, output, rescue, argv)
        code, err, listing = found["code"], found["err"], found["listing"]
        assert "Traceback" not in err
    assert code == 1, err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err
    line = errors[0].lower()
    assert "disk full" in line and "no space left on device" in line and "step 2" in line, line
    assert f"previous checkpoint {checkpoint(output, 1)} is intact".lower() in line, line
    assert "free space" in line and "checkpoint.keep" in line and "output_dir" in line, line
    assert listing == ["step-00000001"], listing  # no .tmp-step-*, no staged file
    assert "unexpected" not in line and "enforce fail" not in line
    # the fix works: on a disk with room, --resume continues from the intact checkpoint
    code, out, err = cli(*argv, f"output_dir={rescue}", "--resume")
    assert code == 0, err
    assert f"resuming from checkpoint {checkpoint(rescue, 1)} (step 1)" in err and "skipping" not in err, err
    assert logged_steps(rescue) == [1, 2, 3]


# -- damaged saved models ----------------------------------------------------------------------------
def _damage_model(directory: Path, how: str) -> None:
    weights, config = directory / "model.safetensors", directory / "config.json"
    if how == "truncated weights":
        os.truncate(weights, weights.stat().st_size // 3)
    elif how == "garbage weights":
        weights.write_bytes(os.urandom(4096))
    elif how == "empty weights":
        weights.write_bytes(b"")
    elif how == "truncated config":
        config.write_text(config.read_text()[:40])
    elif how == "garbage config":
        config.write_bytes(b"\x00\x01binary\xff")
    elif how == "config not an object":
        config.write_text('["format", "pixelagent-segmentation-model"]')


MODEL_DAMAGE = {"truncated weights": "model.safetensors", "garbage weights": "model.safetensors",
                "empty weights": "model.safetensors", "truncated config": "config.json",
                "garbage config": "config.json", "config not an object": "config.json"}


@checkpoints
@pytest.mark.parametrize("how", sorted(MODEL_DAMAGE))
def test_agent_refuses_a_damaged_saved_model_in_one_line(finished_run, tmp_path, expect_clear_error, how):
    from pixelagent import Agent

    model = tmp_path / "model"
    shutil.copytree(finished_run / "final", model)
    _damage_model(model, how)
    error = expect_clear_error(lambda: Agent(str(model), device="cpu"), MODEL_DAMAGE[how], str(model))
    message = str(error)
    assert "re-save" in message or "save it as UTF-8" in message


@checkpoints
def test_a_saved_model_without_weights_or_config_says_where_to_point(finished_run, tmp_path, expect_clear_error):
    from pixelagent import Agent
    from pixelagent.nn.model import SegmentationModel

    model = tmp_path / "model"
    shutil.copytree(finished_run / "final", model)
    (model / "model.safetensors").unlink()
    expect_clear_error(lambda: Agent(str(model), device="cpu"), "no model.safetensors", str(model), "save_pretrained")
    (model / "config.json").unlink()
    expect_clear_error(lambda: SegmentationModel.from_pretrained(model, device="cpu"), "no config.json",
                       str(model), "save_pretrained")


@checkpoints
def test_segment_with_a_truncated_model_is_one_error_line(finished_run, tmp_path, cli):
    from PIL import Image

    model = tmp_path / "model"
    shutil.copytree(finished_run / "final", model)
    _damage_model(model, "truncated weights")
    image = tmp_path / "scene.png"
    Image.new("RGB", (64, 48), (120, 30, 30)).save(image)
    code, _, err = cli("segment", str(image), "Segment the red thing.", "--preset", str(model))
    assert code == 1 and "model.safetensors" in err and "re-save" in err and "unexpected" not in err


# -- config files that are not files, or not text ---------------------------------------------------
@checkpoints
def test_a_fifo_as_the_config_file_fails_at_once(tmp_path, cli):
    fifo = tmp_path / "config.yaml"
    os.mkfifo(fifo)
    code, _, err = cli(*RECIPE, "--config", str(fifo), "--resume")
    assert code == 1 and "FIFO" in err and str(fifo) in err


@checkpoints
def test_a_config_that_is_not_utf8_names_the_byte(tmp_path, config_file, cli):
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes(config_file.read_bytes() + "# réglage\n".encode("latin-1"))
    code, _, err = cli(*RECIPE, "--config", str(bad))
    assert code == 1 and "not UTF-8" in err and "0xe9" in err and str(bad) in err


@checkpoints
@pytest.mark.parametrize("text", ["- a list\n- of things\n", "preset: [unclosed\n", "just a string\n"])
def test_a_config_that_is_not_a_mapping_is_one_line(tmp_path, cli, text):
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    code, _, err = cli(*RECIPE, "--config", str(bad), "optim.lr=1e-3")
    assert code == 1 and str(bad) in err


# -- the command line ---------------------------------------------------------------------------------
@checkpoints
def test_resume_with_nothing_to_resume_says_so_and_trains(config_file, tmp_path, cli):
    output = tmp_path / "new"
    # overrides before and after the flags
    code, out, err = cli(*RECIPE, "optim.max_steps=1", "--config", str(config_file), "--resume",
                         f"output_dir={output}")
    assert code == 0, err
    assert f"no checkpoint under {output / 'checkpoints'} to resume; starting from step 0" in err
    assert logged_steps(output) == [1] and "final model:" in out


@checkpoints
@pytest.mark.parametrize("order", ["flags first", "resume first", "overrides first", "interleaved"])
def test_overrides_and_flags_in_any_order(config_file, tmp_path, cli, order):
    # an invalid value fails validation before anything is built: it proves the override was read
    bad, output = "optim.max_steps=0", f"output_dir={tmp_path / 'never'}"
    argv = {"flags first": ["--config", str(config_file), "--resume", bad, output],
            "resume first": ["--resume", "--config", str(config_file), bad, output],
            "overrides first": [bad, output, "--config", str(config_file)],
            "interleaved": [bad, "--config", str(config_file), "--resume", output]}[order]
    code, _, err = cli(*RECIPE, *argv)
    assert code == 1 and "optim.max_steps" in err and "unrecognized" not in err
    assert not (tmp_path / "never").exists()


@checkpoints
@pytest.mark.parametrize("argv, words", [(["--config", "x.yaml", "--bogus"], "unrecognized arguments: --bogus"),
                                         (["optim.lr=1"], "required: --config"),
                                         (["--config"], "expected one argument")])
def test_a_bad_command_line_is_one_error_line(cli, argv, words):
    code, _, err = cli(*RECIPE, *argv)
    assert code == 1 and words in err and "usage:" not in err

