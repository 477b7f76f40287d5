"""Training configs: every shipped config validates; bad ones report every problem at once."""

import pytest

from pixelagent.errors import ConfigError
from pixelagent.training.config import apply_override, load_config, shipped_configs, validate_config
from pixelagent.training.loop import warmup_linear

EXPECTED = {"miras_7b/stage1", "miras_7b/stage2", "miras_tiny/stage1", "miras_tiny/stage2",
            "lisa_7b/stage1", "lisa_7b/stage2", "lisa_tiny/stage1", "lisa_tiny/stage2"}


def test_the_shipped_configs_are_all_there():
    assert EXPECTED <= set(shipped_configs())


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_shipped_config_validates(name):
    config = load_config(name)
    assert config.optim.betas == (0.9, 0.95) and config.optim.weight_decay == 0.0
    assert config.optim.grad_clip == 1.0
    # the 7B configs keep the paper's λ; the tiny ones, trained from scratch, weight DICE over BCE,
    # and miras-tiny's stage 2 doubles the text term (its 64-d LLM is otherwise bent by the masks)
    expected = (1.0, 0.5, 2.0) if "_tiny/" in name else (1.0, 2.0, 0.5)
    if name == "miras_tiny/stage2":
        expected = (2.0, 0.5, 2.0)
    assert (config.loss.text, config.loss.bce, config.loss.dice) == expected
    assert config.optim.batch_size % config.optim.micro_batch_size == 0
    from pixelagent.registry import get_registry

    # the preset and its overrides make a valid preset (checked before anything is built)
    get_registry().preset(config.preset).preset.with_overrides(**config.preset_overrides)
    from pixelagent.data.adapters import validate_spec

    for spec in [*config.data.sources.values(), *([config.data.val] if config.data.val else [])]:
        validate_spec(spec, check_paths=False)


@pytest.mark.parametrize("name, lr, batch, steps, ratios", [
    ("miras_7b/stage1", 3e-4, 16, 50_000, "9:6:2:2"),
    ("miras_7b/stage2", 1e-5, 32, 20_000, "4:1"),
])
def test_the_7b_configs_carry_the_papers_values(name, lr, batch, steps, ratios):
    config = load_config(name)
    assert (config.optim.lr, config.optim.batch_size, config.optim.max_steps) == (lr, batch, steps)
    assert config.optim.warmup_steps == 100 and config.precision == "bf16-mixed" and config.data.ratios == ratios
    assert config.distributed.strategy == "zero2"  # the paper trains with DeepSpeed ZeRO-2
    assert config.preset == "miras"
    if name.endswith("stage2"):
        assert config.init_from == "runs/miras_7b/stage1/final"


def test_launch_command_is_in_every_header():
    from pixelagent.training.config import resolve_config_path

    for name in EXPECTED:
        header = resolve_config_path(name).read_text().split("\n\n")[0]
        assert "pixelagent recipe train-stage" in header or "torchrun" in header, name


def test_overrides_are_dotted_and_yaml_typed():
    config = load_config("miras_tiny/stage1", ["optim.lr=1e-4", "optim.max_steps=7", "data.ratios=null",
                                                "checkpoint.keep=5", "seed=3"])
    assert (config.optim.lr, config.optim.max_steps, config.checkpoint.keep, config.seed) == (1e-4, 7, 5, 3)
    with pytest.raises(ConfigError, match="not key=value"):
        apply_override({}, "optim.lr")


def test_a_bad_config_reports_every_problem_at_once():
    bad = {"preset": "miras-tiny", "output_dir": "x", "data": {"sources": {"a": {}}, "ratios": {"b": 1}},
           "optim": {"lr": -1, "betas": [0.9], "colour": "red"}, "precision": "fp8"}
    with pytest.raises(ConfigError) as info:
        validate_config(bad, "bad.yaml")
    message = str(info.value)
    for problem in ("optim.lr", "optim.betas", "optim.colour", "precision", "ratios name"):
        assert problem in message
    assert "problem(s)" in message


def test_unknown_config_lists_the_shipped_ones():
    with pytest.raises(ConfigError, match="miras_tiny/stage1"):
        load_config("miras_tiny/stage9")


def test_warmup_then_linear_decay():
    factor = warmup_linear(warmup=100, total=1100)
    assert factor(0) == pytest.approx(0.01) and factor(99) == pytest.approx(1.0)
    assert factor(100) == pytest.approx(1.0) and factor(600) == pytest.approx(0.5) and factor(1100) == 0.0
