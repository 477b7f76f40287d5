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


def load_release_projection(alignment: SegProjectionAlignment, state: dict[str, torch.Tensor], source: str) -> None:
    """Copy a LISA release's ``text_hidden_fcs`` into ``alignment.projection``.

    ``state`` holds the release's ``model.text_hidden_fcs.0.*`` with that prefix removed: LISA's
    ``Sequential(Linear, ReLU, Linear, Dropout)`` has its Linears at 0 and 2, as
    :class:`~pixelagent.nn.projection.SegProjection` (which leaves the no-op Dropout out).
    """
    from pixelagent.errors import ConfigError

    own = alignment.projection.state_dict()
    missing = [k for k in own if k not in state]
    if missing:
        raise ConfigError(f"{source} has no [SEG] projection (missing model.text_hidden_fcs.0.{missing[0]}): "
                          "is it a LISA release?")
    wrong = [f"{k} {tuple(state[k].shape)} (model: {tuple(v.shape)})" for k, v in own.items()
             if tuple(state[k].shape) != tuple(v.shape)]
    if wrong:
        raise ConfigError(f"{source}'s text_hidden_fcs do not fit this LLM and mask decoder: {', '.join(wrong[:2])}")
    alignment.projection.load_state_dict({k: state[k] for k in own})
