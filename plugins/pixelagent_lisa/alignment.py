"""LISA's alignment: the ``[SEG]`` state, projected to SAM's prompt space."""

from __future__ import annotations

import torch

from pixelagent.nn.alignment import SegTokenAlignment
from pixelagent.nn.projection import SegProjection


class SegProjectionAlignment(SegTokenAlignment):
    """prompt = SegProjection(h_[SEG]) — Linear(d, d) → ReLU → Linear(d, 256)."""

    def __init__(self, hidden_size: int, seg_id: int, obj_id: int | None, decode, prompt_dim: int = 256) -> None:
        super().__init__(seg_id, obj_id, decode)
        self.projection = SegProjection(hidden_size, prompt_dim)

    def embed(self, hidden: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        positions = (ids == self.seg_id).nonzero().flatten()
        return self.projection(hidden[positions])
