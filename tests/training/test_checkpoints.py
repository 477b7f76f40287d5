"""Checkpoints that break: fallback to the newest intact one, disk full, metrics after a resume,
``--resume`` with nothing to resume, flags and overrides in any order."""

import errno
import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pixelagent.data.synth import SynthConfig, synthesize
from pixelagent.errors import CheckpointError, ConfigError
from pixelagent.training import checkpoint as ckpt
from pixelagent.training.config import validate_config
from pixelagent.training.entry import parse
from pixelagent.training.logging import MetricsLog
from pixelagent.training.loop import Trainer


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    synthesize(out, SynthConfig(n=8, size=128, seed=0, min_turns=1, max_turns=1))
    return out


def config(synth, output, max_steps=4, **checkpoint):
    return {"preset": "miras-tiny", "output_dir": str(output), "device": "cpu", "precision": "fp32", "seed": 0,
            "data": {"sources": {"synth": {"type": "prist", "dataset_dir": str(synth), "split": "train"}}},
            "optim": {"lr": 3e-3, "warmup_steps": 1, "max_steps": max_steps, "batch_size": 1,
                      "micro_batch_size": 1},
            "checkpoint": {"every": 1, "keep": 2, **checkpoint}, "log": {"every": 1, "tensorboard": False}}


def steps(output):
    return [json.loads(line)["step"] for line in (Path(output) / "metrics.jsonl").read_text().splitlines()]


# -- a real run: the newest checkpoint truncated --------------------------------------------------
def test_resume_skips_a_truncated_checkpoint_and_still_ends_bit_identical(synth, tmp_path, capsys):
    run = tmp_path / "run"
    Trainer(validate_config(config(synth, run), "c")).run()
    straight = load_file(str(run / "final" / "model.safetensors"))
    checkpoints = run / "checkpoints"
    assert [p.name for p in ckpt.checkpoint_dirs(checkpoints)] == ["step-00000002", "step-00000003"]
    meta = json.loads((checkpoints / "step-00000003" / "meta.json").read_text())
    assert set(meta["files"]) == {"trainable.safetensors", "trainer_state.pt"}
    assert all(len(f["sha256"]) == 64 and f["size"] > 0 for f in meta["files"].values())
    weights = checkpoints / "step-00000003" / "trainable.safetensors"
    os.truncate(weights, weights.stat().st_size // 2)
    (checkpoints / ".tmp-step-00000004").mkdir()  # left by a run killed while saving
    (checkpoints / ".tmp-step-00000004" / "trainable.safetensors").write_bytes(b"half")
    capsys.readouterr()

    Trainer(validate_config(config(synth, run), "c")).run(resume=True)
    err = capsys.readouterr().err
    assert f"skipping damaged checkpoint {checkpoints / 'step-00000003'}: trainable.safetensors" in err
    assert "truncated" in err
    assert f"resuming from checkpoint {checkpoints / 'step-00000002'} (step 2)" in err
    assert "removed" in err and ".tmp-step-00000004" in err
    assert not list(checkpoints.glob(".*"))
    resumed = load_file(str(run / "final" / "model.safetensors"))
    assert set(resumed) == set(straight) and all(torch.equal(straight[k], resumed[k]) for k in straight)
    assert steps(run) == [1, 2, 3, 4]  # steps 3 and 4 were redone: each logged once
    redone = json.loads((checkpoints / "step-00000003" / "meta.json").read_text())["files"]
    assert redone["trainable.safetensors"]["size"] == weights.stat().st_size  # the damaged one was replaced


def test_resume_with_nothing_to_resume_says_so_and_starts_from_step_0(synth, tmp_path, capsys):
    run = tmp_path / "fresh"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"step": 1, "loss": 9.0}\n{"step": 2, "lo')  # a run killed early
    capsys.readouterr()
    Trainer(validate_config(config(synth, run, max_steps=1), "c")).run(resume=True)
    assert f"no checkpoint under {run / 'checkpoints'} to resume; starting from step 0" in capsys.readouterr().err
    assert steps(run) == [1] and (run / "final" / "model.safetensors").is_file()


# -- checkpoints of a small module: every kind of damage ------------------------------------------
def _tiny_training_state(seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    scheduler.step()
    return model, optimizer, scheduler


@pytest.fixture
def two_checkpoints(tmp_path):
    root = tmp_path / "checkpoints"
    model, optimizer, scheduler = _tiny_training_state()
    ckpt.save_checkpoint(root, 1, model, optimizer, scheduler, keep=3)
    with torch.no_grad():
        model.weight.add_(1.0)
    ckpt.save_checkpoint(root, 2, model, optimizer, scheduler, keep=3)
    return root


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


DAMAGE = {
    "truncated weights": (lambda d: os.truncate(d / "trainable.safetensors", 40), "trainable.safetensors"),
    "truncated state": (lambda d: os.truncate(d / "trainer_state.pt", 100), "trainer_state.pt"),
    "flipped byte": (lambda d: _flip_a_byte(d / "trainer_state.pt"), "sha-256"),
    "missing state": (lambda d: (d / "trainer_state.pt").unlink(), "trainer_state.pt is missing"),
    "truncated meta": (lambda d: (d / "meta.json").write_text('{"step": 2, "fi'), "meta.json is unreadable"),
    "missing meta": (lambda d: (d / "meta.json").unlink(), "meta.json is missing"),
    "meta not utf-8": (lambda d: (d / "meta.json").write_bytes(b'{"step": 2\xff}'), "meta.json is unreadable"),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_newest_checkpoint_is_skipped_with_a_warning(two_checkpoints, damage):
    breaks, reason = DAMAGE[damage]
    breaks(two_checkpoints / "step-00000002")
    model, optimizer, scheduler = _tiny_training_state(seed=5)
    lines = []
    path, step = ckpt.resume(two_checkpoints, model, optimizer, scheduler, report=lines.append)
    assert (path.name, step) == ("step-00000001", 1)
    assert len(lines) == 2 and lines[0].startswith(f"warning: skipping damaged checkpoint {two_checkpoints}")
    assert reason.lower() in lines[0].lower() and "step-00000002" in lines[0]
    assert "resuming from checkpoint" in lines[1] and "step-00000001" in lines[1]
    reference = _tiny_training_state()[0]
    assert torch.equal(model.weight, reference.weight)  # the older checkpoint's weights, not a mix


def test_every_checkpoint_damaged_is_one_clear_error(two_checkpoints):
    for step in ("step-00000001", "step-00000002"):
        os.truncate(two_checkpoints / step / "trainable.safetensors", 10)
    with pytest.raises(CheckpointError) as info:
        ckpt.resume(two_checkpoints, *_tiny_training_state(), report=lambda line: None)
    message = str(info.value)
    assert "\n" not in message and f"no intact checkpoint under {two_checkpoints}" in message
    assert "step-00000001 (trainable.safetensors" in message and "delete the damaged" in message
    assert "output_dir" in message
    with pytest.raises(CheckpointError, match="step-00000002 is damaged: trainable.safetensors"):
        ckpt.load_checkpoint(two_checkpoints / "step-00000002", *_tiny_training_state())


def test_a_checkpoint_written_before_the_hashes_still_loads(two_checkpoints):
    meta = two_checkpoints / "step-00000002" / "meta.json"
    meta.write_text(json.dumps({"step": 2}))  # what older pixelagent wrote
    lines = []
    assert ckpt.resume(two_checkpoints, *_tiny_training_state(), report=lines.append)[1] == 2
    os.truncate(two_checkpoints / "step-00000002" / "trainer_state.pt", 50)  # no hash, still caught on load
    assert ckpt.resume(two_checkpoints, *_tiny_training_state(), report=lines.append)[1] == 1
    assert "trainer_state.pt cannot be loaded" in lines[-2]


def test_a_checkpoint_of_another_model_is_a_config_error_not_a_fallback(two_checkpoints):
    other = torch.nn.Sequential(torch.nn.Linear(3, 2))  # its parameters are named 0.weight, 0.bias
    optimizer = torch.optim.AdamW(other.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    with pytest.raises(ConfigError, match="does not fit this model"):
        ckpt.resume(two_checkpoints, other, optimizer, scheduler, report=lambda line: None)


# -- writes that fail -----------------------------------------------------------------------------
@pytest.mark.parametrize("code, words", [(errno.ENOSPC, "disk full"), (errno.EDQUOT, "disk full"),
                                         (errno.EFBIG, "disk full"), (errno.EACCES, "writable")])
def test_a_failed_write_leaves_no_partial_folder_and_names_the_intact_one(two_checkpoints, monkeypatch, code, words):
    def fail(obj, path):
        Path(path).write_bytes(b"half a file")
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(ckpt, "_save_torch", fail)
    (two_checkpoints / ".rng-rank-1-step-00000003.pt").write_bytes(b"staged")  # rank 1's, for this step
    before = {p.name: p.read_bytes() for p in (two_checkpoints / "step-00000002").iterdir()}
    with pytest.raises(CheckpointError) as info:
        ckpt.save_checkpoint(two_checkpoints, 3, *_tiny_training_state(), keep=1, world_size=2)
    message = str(info.value)
    assert "\n" not in message and words in message and os.strerror(code) in message
    assert f"previous checkpoint {two_checkpoints / 'step-00000002'} is intact" in message
    assert "--resume" in message
    assert sorted(p.name for p in two_checkpoints.iterdir()) == ["step-00000001", "step-00000002"]
    assert {p.name: p.read_bytes() for p in (two_checkpoints / "step-00000002").iterdir()} == before


def test_safetensors_io_errors_keep_their_errno(tmp_path, monkeypatch):
    from safetensors import SafetensorError

    from pixelagent.nn import model as nn_model

    def full(*args, **kwargs):
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(nn_model, "save_file", full)
    with pytest.raises(OSError) as info:
        nn_model.save_safetensors({"a": torch.zeros(2)}, tmp_path / "x.safetensors")
    assert info.value.errno == errno.ENOSPC


def test_torch_save_errors_keep_their_errno(tmp_path, monkeypatch):
    """torch.save turns a failed write into "enforce fail ... unexpected pos"; ours keeps the errno."""
    real_write = ckpt._Writer.write

    def write(self, data):
        if len(data) > 1000:
            self.error = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            raise self.error
        return real_write(self, data)

    monkeypatch.setattr(ckpt._Writer, "write", write)
    with pytest.raises(OSError) as info:
        ckpt._save_torch({"a": torch.zeros(10_000)}, tmp_path / "x.pt")
    assert info.value.errno == errno.ENOSPC


# -- metrics.jsonl after a resume -----------------------------------------------------------------
def test_the_metrics_log_drops_the_steps_a_resume_redoes(tmp_path):
    rows = [{"step": s, "loss": 1.0} for s in (1, 2, 3)] + [{"step": 3, "val_ciou": 0.5}, {"step": 4, "loss": 1.0}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 5, "lo')
    with MetricsLog(tmp_path, True, False, 6, start_step=3) as log:
        log.write(4, {"loss": 0.5})
    kept = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in kept] == [1, 2, 3, 3, 4] and kept[-1]["loss"] == 0.5
    assert not list(tmp_path.glob("*.partial"))


# -- the command line -----------------------------------------------------------------------------
@pytest.mark.parametrize("argv", [
    ["--config", "c.yaml", "optim.max_steps=4", "--resume"],
    ["--resume", "--config", "c.yaml", "optim.max_steps=4"],
    ["optim.max_steps=4", "--config", "c.yaml", "--resume"],
    ["optim.max_steps=4", "--resume", "--config=c.yaml"],
])
def test_flags_and_overrides_in_any_order(argv):
    args, overrides = parse(argv, "prog", "d")
    assert (args.config, args.resume, overrides) == ("c.yaml", True, ["optim.max_steps=4"])
    args, overrides = parse(["a=1", "--config", "c.yaml", "b=2", "c=3"], "prog", "d")
    assert (args.resume, overrides) == (False, ["a=1", "b=2", "c=3"])


@pytest.mark.parametrize("argv, words", [(["--config", "c.yaml", "--bogus"], "unrecognized arguments: --bogus"),
                                         (["a=1"], "required: --config")])
def test_a_bad_command_line_is_one_config_error(argv, words):
    with pytest.raises(ConfigError, match=words) as info:
        parse(argv, "pixelagent recipe train-stage1", "d")
    assert "\n" not in str(info.value) and "--help" in str(info.value)


def test_a_recipe_run_as_a_script_prints_one_error_line(tmp_path):
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    result = subprocess.run([sys.executable, str(root / "recipes" / "train_stage1.py"), "--config",
                             str(tmp_path / "missing.yaml"), "--resume"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert [line for line in result.stderr.splitlines() if line.strip()] == [
        line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert "missing.yaml" in result.stderr
