"""Training configs: YAML files validated by pydantic, with ``key=value`` overrides.

A config is named by path (``my.yaml``) or by name relative to ``recipes/configs``
(``miras_tiny/stage1``). Overrides use dotted keys and YAML values:
``optim.lr=1e-4 data.ratios=4:1 checkpoint.every=50``. Every problem is reported at once.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pixelagent.errors import ConfigError
from pixelagent.files import check_regular_file, read_text


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OptimConfig(_Strict):
    """AdamW + warmup-then-linear-decay (paper Table 9 and the official defaults)."""

    lr: float = Field(3e-4, gt=0)
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = Field(0.0, ge=0)
    warmup_steps: int = Field(100, ge=0)
    max_steps: int = Field(50_000, ge=1)
    grad_clip: float = Field(1.0, gt=0)
    batch_size: int = Field(16, ge=1, description="global batch: samples per optimiser step")
    micro_batch_size: int = Field(2, ge=1, description="samples per device per forward")
    gradient_checkpointing: bool = Field(
        False, description="recompute each LLM decoder layer in the backward pass instead of storing "
        "its activations (about a tenth of the activation memory of a 7B LLM, ~30 % more compute)")


class LossConfig(_Strict):
    """λ_t, λ_bce, λ_dice of eq. 8, how much of the mask losses' gradient reaches the LLM, an auxiliary loss."""

    text: float = 1.0
    bce: float = 2.0
    dice: float = 0.5
    llm_mask_grad: float = Field(
        1.0, ge=0, le=1,
        description="Scale of the gradient that reaches the LLM's hidden states through the [SEG] prompts "
        "(the mask losses', and the phrase loss's when on): 1 trains end to "
        "end as the paper; less keeps a small LLM's answers from being bent towards the mask decoder "
        "(the alignment and decoder still get the full gradient).")
    phrase: float = Field(
        0.0, ge=0,
        description="Auxiliary, not in the paper (0 = off): a training-only linear head predicts, from "
        "each [SEG] prompt, the words of its [OBJ] phrase (cross-entropy per word), so the prompt must "
        "carry all of them, the colour too. The head is not saved with the model.")


class PhraseNoiseConfig(_Strict):
    """Training-time swaps of unreliable words inside ``[OBJ]…[SEG]`` spans (not in the paper)."""

    p: float = Field(0.0, ge=0, le=1, description="chance that each grouped word of a span is swapped")
    groups: list[list[str]] = Field(
        default_factory=list,
        description="interchangeable words, e.g. [[top, bottom, centre], [left, right]]: a swapped word "
        "becomes another of its group in the LLM's input and leaves the text loss; the mask target "
        "stays, so the mask path learns not to rely on these words alone")


class DataConfig(_Strict):
    """Named sources (adapter specs), their mixing ratios and an optional validation set."""

    sources: dict[str, dict[str, Any]]
    ratios: Any = None  # "9:6:2:2", or {source: weight}; None = all sources equally
    val: Optional[dict[str, Any]] = None

    @model_validator(mode="after")
    def _ratios_name_sources(self) -> DataConfig:
        if isinstance(self.ratios, dict) and set(self.ratios) != set(self.sources):
            raise ValueError(f"ratios name {sorted(self.ratios)} but the sources are {sorted(self.sources)}")
        return self


class CheckpointConfig(_Strict):
    every: int = Field(1000, ge=1)
    keep: int = Field(3, ge=1)
    save_frozen: bool = Field(True, description="final model with frozen weights too (tiny: yes; 7B: no)")


class LogConfig(_Strict):
    every: int = Field(10, ge=1)
    tensorboard: bool = True


class ValidateConfig(_Strict):
    every: int = Field(500, ge=1)
    samples: int = Field(100, ge=1)


class DistributedConfig(_Strict):
    """Multi-process training under torchrun (gloo on CPU, nccl on CUDA).

    ``strategy``: ``ddp`` (PyTorch DDP: the whole model, its gradients and optimiser state on
    every GPU), ``zero2`` (PyTorch FSDP2 sharding the trainable weights' fp32 master copy, their
    gradients and AdamW's state: DeepSpeed ZeRO-2's saving, as the paper trains) or ``zero3``
    (FSDP2 sharding every weight too). See :mod:`pixelagent.training.strategy`; ``pixelagent
    recipe plan-memory`` says what each needs per GPU.
    """

    strategy: Literal["ddp", "zero2", "zero3"] = "ddp"
    backend: Literal["auto", "gloo", "nccl"] = "auto"


class TrainConfig(_Strict):
    """One training stage."""

    preset: str
    preset_overrides: dict[str, Any] = Field(
        default_factory=dict,
        description="changes to the preset for this run, merged like Preset.with_overrides: "
        "{llm: {settings: {train_full: true}}} trains a tiny LLM from scratch, "
        "{alignment: lisa-projection} swaps a part for an ablation")
    init_from: Optional[str] = Field(None, description="a saved model directory to start from (stage 2)")
    output_dir: str
    seed: int = 0
    device: str = "auto"
    precision: Literal["auto", "fp32", "bf16-mixed", "fp16-mixed", "bf16-pure", "bf16"] = Field(
        "auto", description="auto: bf16-mixed on CUDA, fp32 elsewhere; bf16 means bf16-mixed "
        "(see pixelagent.training.precision)")
    data: DataConfig
    optim: OptimConfig = OptimConfig()
    loss: LossConfig = LossConfig()
    phrase_noise: PhraseNoiseConfig = PhraseNoiseConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    log: LogConfig = LogConfig()
    validate_: Optional[ValidateConfig] = Field(None, alias="validate")
    distributed: DistributedConfig = DistributedConfig()
    feature_cache: Optional[str] = Field(None, description="directory caching frozen encoder outputs")

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


def configs_dir() -> Path:
    from pixelagent.recipes import recipes_dir

    return recipes_dir() / "configs"


def resolve_config_path(name_or_path: str | os.PathLike) -> Path:
    """A YAML path as given, else ``recipes/configs/<name>.yaml``."""
    path = Path(name_or_path)
    if path.suffix in {".yaml", ".yml"} and os.path.lexists(path):
        return check_regular_file(path, "config file")  # a FIFO or a folder: one line, never a hang
    candidate = configs_dir() / f"{name_or_path}.yaml"
    if candidate.is_file():
        return candidate
    shipped = ", ".join(shipped_configs()) or "none"
    raise ConfigError(f"no config {str(name_or_path)!r}: not a YAML file and not one of the shipped configs ({shipped})")


def shipped_configs() -> list[str]:
    """Names of the configs under ``recipes/configs`` (``miras_tiny/stage1``, ...)."""
    try:
        root = configs_dir()
    except ConfigError:
        return []
    return sorted(str(p.relative_to(root).with_suffix("")) for p in root.rglob("*.yaml"))


def load_config(name_or_path: str | os.PathLike, overrides: list[str] = ()) -> TrainConfig:
    """Read, override and validate a config; ConfigError lists every problem at once."""
    path = resolve_config_path(name_or_path)
    text = read_text(path, "config file")  # not UTF-8, too big: one line naming the file
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"cannot parse {path}: {' '.join(str(exc).split())}; fix the YAML") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} holds a YAML {type(data).__name__}, not a mapping of keys "
                          "(preset: ..., output_dir: ..., data: ...)")
    for override in overrides:
        apply_override(data, override)
    return validate_config(data, str(path))


def apply_override(data: dict, override: str) -> None:
    """``a.b.c=value`` (value parsed as YAML) sets ``data["a"]["b"]["c"]``."""
    key, sep, raw = override.partition("=")
    if not sep or not key:
        raise ConfigError(f"override {override!r} is not key=value (e.g. optim.lr=1e-4)")
    *parents, leaf = key.split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {override!r}: {part!r} is not a section")
    node[leaf] = yaml.safe_load(raw) if raw else None


def validate_config(data: Any, source: str) -> TrainConfig:
    from pixelagent.validation import problems

    try:
        return TrainConfig.model_validate(data)
    except ValidationError as exc:
        found = problems(exc, TrainConfig, _misplaced)
        raise ConfigError(f"invalid config {source} ({len(found)} problem(s)): " + "; ".join(found)) from None


def _misplaced(loc: tuple, key: str) -> str | None:
    """Where a preset's key belongs when it was written at a training config's top level."""
    if len(loc) != 1:
        return None
    from pixelagent.parts import PART_KINDS

    if key in PART_KINDS:
        return (f"{key} is a part of the preset: put it under preset_overrides.{key} (e.g. "
                f"preset_overrides.{key}.settings.<setting>=value)")
    if key in {"dtype", "limits", "weights", "name"}:
        return f"{key} is a preset field: put it under preset_overrides.{key}"
    return None
