"""Mixed precision keeps an fp32 master copy: small updates (lr 1e-5) survive bf16 autocast."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pixelagent.data.synth import SynthConfig, synthesize
from pixelagent.training import precision as amp
from pixelagent.training.config import validate_config
from pixelagent.training.loop import Trainer

STEPS = 8


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth-precision")
    synthesize(out, SynthConfig(n=12, size=128, seed=5, min_turns=1, max_turns=1))
    return out


def config(synth, output, precision, lr=1e-5, **extra):
    return validate_config({
        "preset": "miras-tiny", "output_dir": str(output), "device": "cpu", "precision": precision, "seed": 0,
        "data": {"sources": {"synth": {"type": "prist", "dataset_dir": str(synth), "split": "train"}}},
        "optim": {"lr": lr, "warmup_steps": 1, "max_steps": STEPS, "batch_size": 2, "micro_batch_size": 2},
        "checkpoint": {"every": 100, "keep": 1}, "log": {"every": 1, "tensorboard": False}, **extra}, precision)


def changed_fraction(synth, tmp_path, precision) -> tuple[float, float]:
    """Share of trainable elements that moved in STEPS steps at lr 1e-5, and their mean |change|."""
    trainer = Trainer(config(synth, tmp_path / precision, precision))
    start = {n: p.detach().float().clone() for n, p in trainer.build_model().named_parameters() if p.requires_grad}
    final = load_file(str(Path(trainer.run()) / "model.safetensors"))
    moved = total = 0
    change = 0.0
    for name, before in start.items():
        delta = (final[name].float() - before).abs()
        moved += int((delta > 0).sum())
        total += delta.numel()
        change += float(delta.sum())
    return moved / total, change / total


def test_bf16_mixed_keeps_the_small_updates_that_bf16_pure_loses(synth, tmp_path):
    fp32, fp32_change = changed_fraction(synth, tmp_path, "fp32")
    mixed, mixed_change = changed_fraction(synth, tmp_path, "bf16-mixed")
    with pytest.warns(UserWarning, match="bf16-pure"):
        pure, _ = changed_fraction(synth, tmp_path, "bf16-pure")
    assert fp32 > 0.5  # AdamW moves nearly every element that gets a gradient
    assert mixed >= 0.95 * fp32, (mixed, fp32)
    assert mixed_change == pytest.approx(fp32_change, rel=0.25)  # the same size of step, rounded differently
    assert pure < 0.5 * fp32, (pure, fp32)  # most 1e-5 updates round away in bf16


def test_mixed_precision_builds_frozen_weights_in_16_bit_and_trainable_in_fp32(synth, tmp_path):
    model = Trainer(config(synth, tmp_path / "dtypes", "bf16-mixed")).build_model()
    trainable = {p.dtype for p in model.parameters() if p.requires_grad}
    frozen = {p.dtype for p in model.parameters() if not p.requires_grad}
    assert trainable == {torch.float32} and frozen == {torch.bfloat16}
    assert model.preset.dtype == "auto"  # saved as configured, not as stored in training


def test_fp16_mixed_scales_the_loss_and_checkpoints_the_scaler(synth, tmp_path):
    trainer = Trainer(config(synth, tmp_path / "fp16", "fp16-mixed", lr=1e-3,
                             checkpoint={"every": 4, "keep": 1}))
    trainer.run()
    state = torch.load(tmp_path / "fp16" / "checkpoints" / "step-00000004" / "trainer_state.pt", weights_only=True)
    assert state["scaler"]["scale"] > 0
    assert torch.isfinite(torch.tensor([v.float().abs().max() for v in
                                        load_file(str(tmp_path / "fp16" / "final" / "model.safetensors")).values()])).all()


def test_precision_names():
    assert amp.resolve("auto", "cpu").name == "fp32" and amp.resolve("auto", "cuda:0").name == "bf16-mixed"
    assert amp.resolve("bf16", "cpu").name == "bf16-mixed"  # the former name
    from pixelagent.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown precision"):
        amp.resolve("fp8", "cpu")
