"""One greedy decode step of a Llama language model without transformers' per-call machinery.

A decode step feeds one token per row. transformers' ``LlamaModel.forward`` spends most of such
a step, at the tiny size and on the CPU, on work around the arithmetic: argument-renaming and
output-capturing wrappers on the model and on every layer, the causal-mask builder, a module
call per projection. Here the same arithmetic runs as plain tensor calls on the model's own
weights, in the same order and with the same kernels (the RMS norms in float32, the rotary
embedding from the model's own ``rotary_emb``, ``scaled_dot_product_attention`` with the mask
transformers would pass), so the states are bit-identical to ``LlamaModel.forward``'s (a test
checks it) and the greedy answers do not change. On the 2-core build machine a step takes about
half the time.

It covers what MIRAS and LISA run at inference: a plain ``LlamaModel`` (LoRA folded in, no
adapter wrapper) with SDPA attention, as many key/value heads as query heads, a growing
``DynamicCache``, in eval mode. Anything else (a peft wrapper, eager or flash attention, grouped
key/value heads, a static cache, ``compile``) keeps transformers' forward:
:func:`lean_decoder` returns None for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F


@dataclass(frozen=True)
class _Layer:
    """One decoder layer's weights (``*_b`` biases: None without ``attention_bias`` / ``mlp_bias``)."""

    norm1: torch.Tensor
    eps1: float
    q: torch.Tensor
    q_b: torch.Tensor | None
    k: torch.Tensor
    k_b: torch.Tensor | None
    v: torch.Tensor
    v_b: torch.Tensor | None
    o: torch.Tensor
    o_b: torch.Tensor | None
    head_dim: int
    scaling: float
    norm2: torch.Tensor
    eps2: float
    gate: torch.Tensor
    gate_b: torch.Tensor | None
    up: torch.Tensor
    up_b: torch.Tensor | None
    down: torch.Tensor
    down_b: torch.Tensor | None
    act: nn.Module


class LeanDecoder:
    """Decode steps of ``model`` (a ``LlamaModel``); build it with :func:`lean_decoder`."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.layers = [_layer(layer) for layer in model.layers[: model.config.num_hidden_layers]]
        self.norm, self.eps = model.norm.weight, model.norm.variance_epsilon

    def step(self, embeds: torch.Tensor, attention: torch.Tensor | None, positions: torch.Tensor | None,
             cache: Any) -> torch.Tensor:
        """Feed ``embeds`` (B, 1, d) after ``cache`` (extended in place) → last-layer states (B, d).

        ``attention`` (B, past + 1), 1 for real positions, 0 for pads; ``positions`` (B, 1) each
        row's own position. Both None: no pads, and the position is the cache's length.
        """
        rows = embeds.shape[0]
        if positions is None:  # as transformers: one position for every row, broadcast
            positions = torch.full((1, 1), cache.get_seq_length(), dtype=torch.long, device=embeds.device)
        cos, sin = self.model.rotary_emb(embeds, positions)
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)  # (B|1, 1, 1, head_dim), broadcast over heads
        # transformers' SDPA mask for one new token: True where a row may look (every past
        # position is before it, so only the pads are hidden); none at all when nothing is padded
        mask = None if attention is None or bool(attention.all()) else attention.bool()[:, None, None, :]
        hidden = embeds
        for index, w in enumerate(self.layers):
            x = _rms_norm(hidden, w.norm1, w.eps1)
            shape = (rows, 1, -1, w.head_dim)
            query = F.linear(x, w.q, w.q_b).view(shape).transpose(1, 2)
            key = F.linear(x, w.k, w.k_b).view(shape).transpose(1, 2)
            value = F.linear(x, w.v, w.v_b).view(shape).transpose(1, 2)
            query = query * cos + _rotate_half(query) * sin
            key = key * cos + _rotate_half(key) * sin
            key, value = cache.update(key, value, index)
            out = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, dropout_p=0.0,
                                                 scale=w.scaling, is_causal=False)
            out = out.transpose(1, 2).reshape(rows, 1, -1).contiguous()
            hidden = hidden + F.linear(out, w.o, w.o_b)
            x = _rms_norm(hidden, w.norm2, w.eps2)
            hidden = hidden + F.linear(w.act(F.linear(x, w.gate, w.gate_b)) * F.linear(x, w.up, w.up_b),
                                       w.down, w.down_b)
        return _rms_norm(hidden, self.norm, self.eps)[:, -1]


def lean_decoder(model: nn.Module) -> LeanDecoder | None:
    """A :class:`LeanDecoder` for ``model``, or None where it does not compute what
    transformers' forward would (module docstring)."""
    from transformers import LlamaModel

    if type(model) is not LlamaModel or model.training:
        return None
    config = model.config
    if config._attn_implementation != "sdpa" or config.num_key_value_heads != config.num_attention_heads:
        return None
    if any(m._forward_hooks or m._forward_pre_hooks for m in model.modules()):
        return None  # someone watches the modules' calls (a profiler, an adapter): keep them
    return LeanDecoder(model)


def _layer(layer: nn.Module) -> _Layer:
    attention, mlp = layer.self_attn, layer.mlp
    return _Layer(
        norm1=layer.input_layernorm.weight, eps1=layer.input_layernorm.variance_epsilon,
        q=attention.q_proj.weight, q_b=attention.q_proj.bias, k=attention.k_proj.weight,
        k_b=attention.k_proj.bias, v=attention.v_proj.weight, v_b=attention.v_proj.bias,
        o=attention.o_proj.weight, o_b=attention.o_proj.bias, head_dim=attention.head_dim,
        scaling=attention.scaling, norm2=layer.post_attention_layernorm.weight,
        eps2=layer.post_attention_layernorm.variance_epsilon, gate=mlp.gate_proj.weight,
        gate_b=mlp.gate_proj.bias, up=mlp.up_proj.weight, up_b=mlp.up_proj.bias,
        down=mlp.down_proj.weight, down_b=mlp.down_proj.bias, act=mlp.act_fn)


def _rms_norm(hidden: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """LlamaRMSNorm: normalised in float32, scaled in the input's dtype."""
    dtype = hidden.dtype
    x = hidden.to(torch.float32)
    x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return weight * x.to(dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)
