"""MIRAS semantic region alignment (paper eq. 6).

The ``[OBJ] phrase [SEG]`` span's states are projected to 256-d; the projected ``[SEG]`` state
attends over the projected span (8-head attention, dim 256), then Linear(256, 256). This is a
registered module, trained and saved with the model (the official release built a fresh random
attention module inside every forward pass and so never trained it).
"""

from __future__ import annotations

import torch
from torch import nn

from pixelagent.nn.alignment import SegTokenAlignment
from pixelagent.nn.projection import SegProjection


class SemanticRegionAlignment(SegTokenAlignment):
    """prompt = Linear(MHA(q = P(h_[SEG]), k = v = P(h_[OBJ] … h_[SEG]))), P = SegProjection."""

    def __init__(self, hidden_size: int, seg_id: int, obj_id: int, decode, prompt_dim: int = 256,
                 heads: int = 8) -> None:
        super().__init__(seg_id, obj_id, decode)
        self.projection = SegProjection(hidden_size, prompt_dim)
        self.attention = nn.MultiheadAttention(prompt_dim, heads, batch_first=True)
        self.out = nn.Linear(prompt_dim, prompt_dim)

    def embed(self, hidden: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """hidden (T, d), ids (T,) → (n_seg, 256); a span is ``[OBJ]`` … ``[SEG]`` inclusive."""
        prompts = [self._one(self.projection(hidden[start:seg + 1])) for start, seg in self.spans(ids)]
        if not prompts:
            return hidden.new_zeros(0, self.out.out_features)
        return torch.stack(prompts)

    def _one(self, span: torch.Tensor) -> torch.Tensor:
        query = span[-1:].unsqueeze(0)  # (1, 1, 256): the [SEG] state
        attended, _ = self.attention(query, span.unsqueeze(0), span.unsqueeze(0), need_weights=False)
        return self.out(attended[0, 0])
