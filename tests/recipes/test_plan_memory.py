"""plan-memory: counts on the meta device equal what the real model holds and saves."""

import json

import pytest

from pixelagent.nn.losses import LossWeights
from pixelagent.nn.model import SegmentationModel
from pixelagent.recipes import run_recipe
from pixelagent.registry import get_registry
from pixelagent.training import memory
from pixelagent.training.config import load_config


@pytest.fixture(scope="module")
def tiny_config():
    return load_config("miras_tiny/stage1", ["optim.micro_batch_size=2"])


def _real_model(config):
    """The config's model built for real on the CPU, as plan-memory describes it (random SAM)."""
    registry = get_registry()
    preset = memory._meta_preset(config, registry).with_overrides(device="cpu", dtype="float32")
    return SegmentationModel(registry.build(preset), preset, LossWeights(**config.loss.model_dump())).train()


def test_meta_counts_equal_the_real_models(tiny_config):
    footprint = memory.measure(tiny_config, text_tokens=96, gradient_checkpointing=False, dtype="float32")
    real = _real_model(tiny_config)
    assert footprint.trainable == sum(p.numel() for p in real.parameters() if p.requires_grad)
    assert footprint.frozen == sum(p.numel() for p in real.parameters() if not p.requires_grad)
    samples = memory._synthetic_batch(real, 2, 96)
    assert footprint.activation_bytes == memory._saved_bytes(real, samples)  # what autograd really saved


def test_gradient_checkpointing_stores_less(tiny_config):
    full = memory.measure(tiny_config, text_tokens=96, gradient_checkpointing=False)
    checkpointed = memory.measure(tiny_config, text_tokens=96, gradient_checkpointing=True)
    assert checkpointed.activation_bytes < full.activation_bytes
    assert checkpointed.frozen == full.frozen and checkpointed.trainable == full.trainable


def test_sharding_and_precision_arithmetic():
    footprint = memory.Footprint(frozen=1000, trainable=100, trainable_by_part={}, activation_bytes=64,
                                 micro_batch=1, tokens=10, largest_unit=50)
    ddp = memory.plan(footprint, 4, "ddp", "bf16-mixed")
    assert (ddp.weights, ddp.gradients, ddp.optimizer) == (1000 * 2 + 100 * 4, 400, 800)
    zero2 = memory.plan(footprint, 4, "zero2", "bf16-mixed")
    assert (zero2.weights, zero2.gradients, zero2.optimizer) == (2000 + 100 + 200, 100, 200)
    zero3 = memory.plan(footprint, 4, "zero3", "bf16-mixed")
    assert zero3.weights == (2000 + 400) // 4 + 2 * 50 * 2 and zero3.optimizer == 200
    fp32 = memory.plan(footprint, 1, "ddp", "fp32", gpu_memory=1 << 40)
    assert fp32.activations == 128 and fp32.weights == 4400 and fp32.fits is True
    assert memory.plan(footprint, 1, "ddp", "fp32", gpu_memory=10).fits is False
    assert memory.parse_bytes("48GiB") == 48 << 30 and memory.parse_bytes("80GB") == 80 * 10**9


def test_the_recipe_prints_a_plan_for_the_7b_config(capsys):
    code = run_recipe("plan-memory", ["--config", "miras_7b/stage1", "--gpus", "2", "--gpu-memory", "48GiB",
                                      "--strategy", "ddp", "--precision", "bf16-mixed",
                                      "--gradient-checkpointing", "off", "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    (row,) = report["plans"]
    assert 7.0e9 < row["frozen_parameters"] < 8.0e9  # LLaMA-7B + CLIP-L + ConvNeXt-L + SAM ViT-H
    assert 2.5e8 < row["trainable_parameters"] < 3.5e8  # LoRA, embed_tokens, lm_head, decoder, fusion, SRA
    assert row["weights"] > 14 * 2**30 and row["fits"] is True


def test_bad_memory_sizes_are_one_line_errors():
    from pixelagent.errors import ConfigError

    with pytest.raises(ConfigError, match="48GiB"):
        memory.parse_bytes("lots")
    with pytest.raises(ConfigError, match="unknown strategy"):
        memory.plan(memory.Footprint(1, 1, {}, 1, 1, 1), 1, "zero9", "fp32")
