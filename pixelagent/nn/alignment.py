"""Alignment strategies that read ``[SEG]`` hidden states (LISA's and MIRAS's share this base)."""

from __future__ import annotations

from abc import abstractmethod

import torch
from torch import nn

from pixelagent.errors import PartError
from pixelagent.nn.tokens import focus_spans
from pixelagent.parts import AlignmentStrategy, DecoderPrompt, Generation


class SegTokenAlignment(AlignmentStrategy, nn.Module):
    """Hidden states of a reply → one 256-d decoder prompt per ``[SEG]`` token.

    Subclasses implement :meth:`embed`. Hidden states follow the convention of
    :mod:`pixelagent.nn.tokens` (the state of a token is the one that predicted it), so the same
    :meth:`embed` serves generation (:meth:`align`) and teacher-forced training (:meth:`embed_batch`).

    Args:
        seg_id / obj_id: token ids of ``[SEG]`` and ``[OBJ]`` in the LLM's vocabulary.
        decode: token ids → text, to name each target by its ``[OBJ]…[SEG]`` phrase.
    """

    def __init__(self, seg_id: int, obj_id: int | None, decode) -> None:
        nn.Module.__init__(self)
        self.seg_id, self.obj_id = seg_id, obj_id
        self._decode = decode

    @abstractmethod
    def embed(self, hidden: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """hidden (T, d) and ids (T,) of one sequence → prompts (n_seg, 256), one per ``[SEG]``."""

    def spans(self, ids: torch.Tensor) -> list[tuple[int, int]]:
        return focus_spans(ids, self.seg_id, self.obj_id)

    def embed_batch(self, hidden: torch.Tensor, ids: torch.Tensor) -> list[torch.Tensor]:
        """(B, L, d), (B, L) → per sequence a tensor (n_i, 256)."""
        return [self.embed(hidden[b], ids[b]) for b in range(hidden.shape[0])]

    @torch.no_grad()
    def align(self, generation: Generation, image_size: tuple[int, int]) -> list[DecoderPrompt]:
        ids = generation.token_ids
        if ids is None or generation.hidden_states is None:
            raise PartError(f"{type(self).__name__} needs the LLM's token ids and hidden states; "
                            "pair it with a local backbone such as llava-next")
        spans = self.spans(ids)
        if not spans:
            return []
        embeddings = self.embed(generation.hidden_states, ids.cpu())  # positions are read on the CPU
        return [DecoderPrompt(phrase=self._phrase(ids, start, seg), embedding=embeddings[i])
                for i, (start, seg) in enumerate(spans)]

    def _phrase(self, ids: torch.Tensor, start: int, seg: int) -> str:
        return self._decode(ids[start + 1:seg].tolist()).strip() if start < seg else ""


def unit_scale_init(module: nn.Module) -> None:
    """Variance-preserving init of every Linear / attention projection in ``module``.

    Why: SAM's own prompt tokens (point, box, output tokens) have about unit scale per
    channel. With PyTorch's default Linear init each layer shrinks its input by ~√3, so a fresh
    projection hands SAM ``[SEG]`` prompts ~20× smaller than its other tokens (measured on
    miras-tiny: per-channel std 0.05), and the decoder learns to ignore them — the gradient
    reaching the prompt path was ~200× weaker than the decoder's own. Weights ~ N(0, g/fan_in)
    (g = 2 before a ReLU, else 1) and zero biases keep unit-scale states at unit scale.
    """
    layers = list(module.modules())
    for index, layer in enumerate(layers):
        if isinstance(layer, nn.Linear):
            relu_next = index + 1 < len(layers) and isinstance(layers[index + 1], nn.ReLU)
            nn.init.normal_(layer.weight, std=((2.0 if relu_next else 1.0) / layer.in_features) ** 0.5)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
        elif isinstance(layer, nn.MultiheadAttention) and layer.in_proj_weight is not None:
            nn.init.normal_(layer.in_proj_weight, std=layer.embed_dim ** -0.5)
            nn.init.zeros_(layer.in_proj_bias)


def build_alignment(cls: type[SegTokenAlignment], seed: int, context, **options) -> SegTokenAlignment:
    """Build an alignment module for a preset: sizes and token ids from the LLM already built,
    the prompt width from the mask decoder, initialised under ``seed`` without touching the
    global RNG, on the preset's device and dtype."""
    from pixelagent.nn.device import seeded_rng, torch_device, torch_dtype

    llm, decoder = context.parts["llm"], context.parts["mask_decoder"]
    with seeded_rng(seed):
        module = cls(llm.hidden_size, llm.seg_id, llm.obj_id, llm.tokenizer.decode,
                     prompt_dim=decoder.prompt_dim, **options)
        unit_scale_init(module)
    return module.to(device=torch_device(context.device), dtype=torch_dtype(context.dtype)).eval()
