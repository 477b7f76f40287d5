"""The training objective of paper eq. 8: λ_t·CE + λ_bce·BCE + λ_dice·DICE (1.0, 2.0, 0.5)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

#: LISA's DICE scale: the sums are divided by it before the ratio, which only changes how much
#: ``eps`` matters. LISA's code uses 1000 (DESIGN.md §2 says 1e4; we follow LISA's code).
DICE_SCALE = 1000.0
DICE_EPS = 1e-6


@dataclass(frozen=True)
class LossWeights:
    """λ_t, λ_bce, λ_dice of eq. 8 (LISA's values, kept by MIRAS)."""

    text: float = 1.0
    bce: float = 2.0
    dice: float = 0.5
    #: Scale of the gradient into the LLM's hidden states through the prompts: the mask losses'
    #: (and the phrase loss's). 1 = end to end, as the paper. The forward pass is unchanged.
    llm_mask_grad: float = 1.0
    #: Auxiliary, not in eq. 8 (0 = off): each prompt predicts the words of its own phrase.
    phrase: float = 0.0


def dice_loss(logits: torch.Tensor, targets: torch.Tensor, scale: float = DICE_SCALE,
              eps: float = DICE_EPS) -> torch.Tensor:
    """Per-mask DICE loss, summed: logits and targets (n, H, W) → scalar (sum over the n masks)."""
    probs = logits.sigmoid().flatten(1)
    targets = targets.flatten(1).to(probs.dtype)
    numerator = 2 * (probs / scale * targets).sum(-1)
    denominator = (probs / scale).sum(-1) + (targets / scale).sum(-1)
    return (1 - (numerator + eps) / (denominator + eps)).sum()


def bce_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-mask mean pixel BCE, summed: (n, H, W) → scalar (sum over the n masks)."""
    per_pixel = F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype), reduction="none")
    return per_pixel.flatten(1).mean(-1).sum()


def mask_losses(logits: list[torch.Tensor], targets: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean BCE and mean DICE over every mask of a batch (images of different sizes allowed).

    ``logits[i]`` and ``targets[i]`` are (n_i, H_i, W_i). With no mask at all both are zero
    (still connected to the graph so that backward works on text-only batches).
    """
    count = sum(t.shape[0] for t in targets)
    if count == 0:
        zero = sum(l.sum() * 0 for l in logits) if logits else torch.zeros(())
        return zero, zero
    bce = sum(bce_loss(l.float(), t) for l, t in zip(logits, targets) if t.shape[0])
    dice = sum(dice_loss(l.float(), t) for l, t in zip(logits, targets) if t.shape[0])
    return bce / count, dice / count


def scale_grad(tensor: torch.Tensor, scale: float) -> torch.Tensor:
    """``tensor`` unchanged in the forward pass, its gradient multiplied by ``scale`` in the backward."""
    if scale == 1.0:
        return tensor
    detached = tensor.detach()
    return detached + (tensor - detached) * scale  # exactly ``tensor`` forward: the difference is 0


def phrase_loss(logits: torch.Tensor, words: torch.Tensor) -> torch.Tensor:
    """Bag-of-words reconstruction: logits and multi-hot targets (n, V) → scalar, summed over the n rows.

    Per row, the mean over its k words of their softmax cross-entropy; the minimum, log k, is
    reached when the row spreads its probability evenly over exactly its own words.
    """
    log_probs = F.log_softmax(logits.float(), dim=-1)
    words = words.to(log_probs.dtype)
    return (-(log_probs * words).sum(-1) / words.sum(-1).clamp(min=1.0)).sum()
