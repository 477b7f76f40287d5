"""A memory plan for a training config, before renting GPUs: bytes per GPU by strategy and precision.

The model of the config is built for real on the ``meta`` device (every part with
``random_init`` where it has the setting, so nothing is downloaded and nothing is allocated),
its parameters are counted by what trains and what is frozen, and one micro-batch runs forward
and backward on ``meta`` with a hook that adds up every tensor autograd saves for the backward
pass (the activations). Attention is counted as the fused kernels store it on a GPU (inputs,
output and log-sum-exp; never the L×L score matrix, which ``meta``'s math fallback would save).

Per GPU, with N GPUs, P_f frozen and P_t trainable parameters:

====================  =====================  ============================  =====================
                      ddp                    zero2 (FSDP2)                 zero3 (FSDP2)
====================  =====================  ============================  =====================
frozen weights        P_f·w                  P_f·w                         P_f·w / N
trainable weights     P_t·m                  P_t·m / N + P_t·c (gathered)  P_t·m / N + unit
gradients             P_t·m                  P_t·m / N                     P_t·m / N
optimizer (AdamW)     2·P_t·m                2·P_t·m / N                   2·P_t·m / N
activations           measured               measured                      measured
====================  =====================  ============================  =====================

where w is the bytes of a frozen weight (2 in the 16-bit precisions, 4 in fp32), m those of a
trainable (master) weight (4, or 2 in bf16-pure) and c those of its compute copy (2, or 4 in
fp32). ZeRO-2 keeps the frozen model replicated and the trainable parameters gathered for the
whole step (``reshard_after_forward=False``); ZeRO-3 shards everything and gathers one layer at
a time. Activations are per micro-batch (``optim.micro_batch_size``) and do not shrink with N.
The CUDA context and allocator slack come on top: :data:`OVERHEAD_BYTES` plus
:data:`FRAGMENTATION` of the rest are added before comparing with the card.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass, field
from typing import Any, Iterator

from pixelagent.errors import ConfigError
from pixelagent.training.config import TrainConfig

STRATEGIES = ("ddp", "zero2", "zero3")
PRECISIONS = ("fp32", "bf16-mixed", "fp16-mixed", "bf16-pure")
#: CUDA context, cuBLAS/cuDNN workspaces and NCCL buffers: about 1 GiB on current cards.
OVERHEAD_BYTES = 1 << 30
#: The caching allocator's slack over the live bytes.
FRAGMENTATION = 0.10


@dataclass
class Footprint:
    """What the model of a config holds and saves, counted once on the meta device.

    Attributes:
        frozen: parameters that do not train (elements).
        trainable: parameters that train (elements).
        trainable_by_part: trainable elements per part (visual_encoder, llm, alignment, ...).
        activation_bytes: bytes autograd saved for one micro-batch, computed in 16-bit.
        micro_batch: samples in that micro-batch; tokens: positions per sample the LLM saw.
        largest_unit: elements of the biggest LLM decoder layer (what ZeRO-3 gathers at once).
    """

    frozen: int
    trainable: int
    trainable_by_part: dict[str, int]
    activation_bytes: int
    micro_batch: int
    tokens: int
    largest_unit: int = 0
    gradient_checkpointing: bool = False
    dtype: str = "bfloat16"


@dataclass
class GpuPlan:
    """Bytes on each GPU for one strategy and precision."""

    strategy: str
    precision: str
    gpus: int
    weights: int
    gradients: int
    optimizer: int
    activations: int
    total: int = 0
    fits: bool | None = None
    parts: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def element_bytes(precision: str) -> tuple[int, int, int]:
    """(frozen weight, trainable master weight, trainable compute copy) bytes per element."""
    if precision == "fp32":
        return 4, 4, 4
    if precision == "bf16-pure":
        return 2, 2, 2
    if precision in ("bf16-mixed", "fp16-mixed"):
        return 2, 4, 2
    raise ConfigError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")


def plan(footprint: Footprint, gpus: int, strategy: str, precision: str,
         gpu_memory: int | None = None) -> GpuPlan:
    """Per-GPU bytes of ``footprint`` trained with ``strategy`` and ``precision`` on ``gpus`` GPUs."""
    if strategy not in STRATEGIES:
        raise ConfigError(f"unknown strategy {strategy!r}; use one of {', '.join(STRATEGIES)}")
    if gpus < 1:
        raise ConfigError(f"--gpus must be at least 1, got {gpus}")
    w, m, c = element_bytes(precision)
    frozen, trainable, n = footprint.frozen, footprint.trainable, gpus
    if strategy == "ddp":
        weights, grads, optim = frozen * w + trainable * m, trainable * m, 2 * trainable * m
    elif strategy == "zero2":
        weights = frozen * w + _ceil_div(trainable * m, n) + trainable * c
        grads, optim = _ceil_div(trainable * m, n), _ceil_div(2 * trainable * m, n)
    else:
        unit = 2 * footprint.largest_unit * max(w, c)  # the gathered layer and the one prefetched
        weights = _ceil_div(frozen * w + trainable * m, n) + unit
        grads, optim = _ceil_div(trainable * m, n), _ceil_div(2 * trainable * m, n)
    # a footprint counted in float32 is used as is for fp32; one counted in 16-bit doubles (about)
    counted_in_fp32 = footprint.dtype == "float32"
    activations = footprint.activation_bytes * (2 if precision == "fp32" and not counted_in_fp32 else 1)
    if precision != "fp32" and counted_in_fp32:
        activations //= 2
    live = weights + grads + optim + activations
    total = int(OVERHEAD_BYTES + live * (1 + FRAGMENTATION))
    return GpuPlan(strategy, precision, gpus, weights, grads, optim, activations, total,
                   None if gpu_memory is None else total <= gpu_memory)


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


# -- measuring on the meta device ------------------------------------------------------------------
def measure(config: TrainConfig, text_tokens: int = 512, gradient_checkpointing: bool | None = None,
            dtype: str = "bfloat16") -> Footprint:
    """Build ``config``'s model on ``meta`` and count its parameters and one micro-batch's activations.

    ``text_tokens`` is the length of each sample's dialogue in tokens (the visual tokens come on
    top, as many as the visual encoder makes). ``gradient_checkpointing`` defaults to the
    config's ``optim.gradient_checkpointing`` when it has one. ``dtype`` is the compute dtype
    the activations are counted in (bfloat16 stands for every 16-bit precision; float32 for fp32).
    """
    import torch

    from pixelagent.nn.model import SegmentationModel
    from pixelagent.registry import get_registry

    registry = get_registry()
    preset = _meta_preset(config, registry).with_overrides(dtype=dtype)
    with _quiet():
        model = SegmentationModel(registry.build(preset), preset, _loss_weights(config))
    if gradient_checkpointing is None:
        gradient_checkpointing = bool(getattr(config.optim, "gradient_checkpointing", False))
    model.train()
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    by_part = {kind: sum(p.numel() for p in part.parameters() if p.requires_grad)
               for kind, part in model.parts.items() if isinstance(part, torch.nn.Module)}
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    samples = _synthetic_batch(model, config.optim.micro_batch_size, text_tokens)
    saved = _saved_bytes(model, samples)
    layers = _llm_layers(model)
    if gradient_checkpointing and hasattr(model.llm, "enable_gradient_checkpointing"):
        model.llm.enable_gradient_checkpointing()
        stored = _saved_bytes(model, samples)
        # the backward pass recomputes one layer at a time: its activations are live on top
        saved = stored + (saved - stored) // max(1, len(layers))
    return Footprint(frozen=frozen, trainable=trainable, trainable_by_part=by_part, activation_bytes=saved,
                     micro_batch=len(samples), tokens=text_tokens + _visual_tokens(model),
                     largest_unit=max((sum(p.numel() for p in layer.parameters()) for layer in layers), default=0),
                     gradient_checkpointing=gradient_checkpointing, dtype=dtype)


def _meta_preset(config: TrainConfig, registry):
    from pixelagent.agent import resolve_preset

    preset = resolve_preset(config.preset, registry).with_overrides(**config.preset_overrides)
    overrides: dict[str, Any] = {"device": "meta", "dtype": "bfloat16", "weights": None}
    for kind in ("visual_encoder", "llm", "alignment", "mask_decoder"):
        choice = preset.choice(kind)
        spec = registry.part(kind, choice.name)
        fields = getattr(spec.settings, "model_fields", {}) if spec.settings else {}
        settings = dict(choice.settings)
        if "random_init" in fields and not settings.get("tiny"):
            settings["random_init"] = True
            if "checkpoint" in fields:
                settings["checkpoint"] = None
        elif "checkpoint" in fields and settings.get("checkpoint"):
            settings["checkpoint"] = None  # tiny SAM: random weights, same shapes
            settings.setdefault("random_init", False)
        overrides[kind] = {"name": choice.name, "settings": settings}
    return preset.with_overrides(**overrides)


def _loss_weights(config: TrainConfig):
    from pixelagent.nn.losses import LossWeights

    return LossWeights(**config.loss.model_dump())


def _visual_tokens(model) -> int:
    encoder = model.parts["visual_encoder"]
    return int(getattr(encoder, "num_tokens", 0) or 0)


def _llm_layers(model) -> list:
    """The LLM's decoder layers (what gradient checkpointing and ZeRO-3 handle one at a time)."""
    import torch

    for name, module in model.llm.named_modules():
        if name.endswith("layers") and isinstance(module, torch.nn.ModuleList) and len(module):
            return list(module)
    return []


def _synthetic_batch(model, size: int, text_tokens: int) -> list:
    """``size`` samples whose dialogue is ``text_tokens`` tokens (one segmentation answer) at the
    image size the parts expect; contents are irrelevant on ``meta``."""
    import numpy as np

    from pixelagent.nn.model import SegSample

    side = int(getattr(model.parts["mask_decoder"], "image_size", 1024))
    image = np.zeros((side, side, 3), dtype=np.uint8)
    masks = np.zeros((1, side, side), dtype=bool)
    masks[0, : side // 4, : side // 4] = True
    answer = "It is [OBJ]the red label on the bottle[SEG]."
    base = len(model.llm.encode_dialogue([("q", answer)])[0])
    filler = max(1, text_tokens - base)
    question = " ".join(["label"] * filler)
    return [SegSample(image, [(question, answer)], masks) for _ in range(size)]


def _saved_bytes(model, samples) -> int:
    """Bytes of the distinct tensors autograd saves in one forward (parameters excluded)."""
    import torch

    parameters = {p.untyped_storage()._cdata for p in model.parameters()}
    seen: set[int] = set()
    held: list = []  # keeps every counted storage alive, so a freed one's address is never reused
    total = 0

    def pack(tensor):
        nonlocal total
        storage = tensor.untyped_storage()
        key = storage._cdata
        if key not in parameters and key not in seen:
            seen.add(key)
            held.append(tensor)
            total += storage.nbytes()
        return tensor

    # the backward pass runs under the same patches: checkpointed layers recompute in it
    with _fused_attention_on_meta(), _meta_is_tracing():
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = model(samples)
        out.loss.backward()
    return total


@contextlib.contextmanager
def _fused_attention_on_meta() -> Iterator[None]:
    """On ``meta``, scaled_dot_product_attention falls back to the math path, which saves the
    L×L attention weights; a GPU runs a fused kernel that saves only q, k, v, the output and
    the log-sum-exp. Route meta calls through the fused CPU kernel's meta implementation, whose
    saved tensors are those."""
    import torch
    import torch.nn.functional as F

    original = F.scaled_dot_product_attention

    def fused(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
        if query.device.type != "meta" or enable_gqa:
            return original(query, key, value, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal,
                            scale=scale, enable_gqa=enable_gqa)
        output, _ = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            query, key, value, dropout_p, is_causal, attn_mask=attn_mask, scale=scale)
        return output

    F.scaled_dot_product_attention = fused
    try:
        yield
    finally:
        F.scaled_dot_product_attention = original


@contextlib.contextmanager
def _meta_is_tracing() -> Iterator[None]:
    """transformers skips its data-dependent mask checks (``.all()`` on a mask, packed-sequence
    detection) while tracing; meta tensors have no data either, so count them as traced."""
    try:
        from transformers import masking_utils
    except ImportError:
        yield
        return
    original = masking_utils.is_tracing

    def tracing(tensor=None) -> bool:
        return original(tensor) or (tensor is not None and getattr(tensor, "device", None) is not None
                                    and tensor.device.type == "meta")

    masking_utils.is_tracing = tracing
    try:
        yield
    finally:
        masking_utils.is_tracing = original


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def human_bytes(count: int) -> str:
    """1536 → '1.5 KiB' (binary units, as GPU memory is quoted)."""
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def parse_bytes(text: str) -> int:
    """'48GiB', '80GB', '48 GiB', '4.5e10' → bytes (GB is decimal, GiB binary)."""
    import re

    match = re.fullmatch(r"\s*([0-9.]+(?:e[0-9]+)?)\s*([KMGT]i?B|B)?\s*", text, re.IGNORECASE)
    if not match:
        raise ConfigError(f"cannot read {text!r} as a memory size; write it like 48GiB or 80GB")
    number, unit = float(match.group(1)), (match.group(2) or "B").upper()
    scale = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
             "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}[unit]
    return int(number * scale)
