"""The text→SAM projection shared by LISA and MIRAS."""

from __future__ import annotations

from torch import nn


class SegProjection(nn.Sequential):
    """Linear(d, d) → ReLU → Linear(d, out): last-layer LLM states (…, d) → prompt space (…, out).

    LISA's ``text_hidden_fcs`` (its trailing Dropout(0.0) is a no-op and left out); MIRAS uses the
    same projection before its semantic region alignment. ``out`` is SAM's prompt width, 256.
    """

    def __init__(self, hidden_size: int, out_dim: int = 256) -> None:
        super().__init__(nn.Linear(hidden_size, hidden_size), nn.ReLU(inplace=True),
                         nn.Linear(hidden_size, out_dim))
