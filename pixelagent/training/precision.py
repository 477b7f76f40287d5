"""Training precision: which dtype each kind of tensor lives in, and the autocast / loss scaling.

The ``precision`` setting of a training config:

- ``fp32``: everything in float32 (the tiny CPU configs).
- ``bf16-mixed`` (``auto`` on CUDA): frozen weights stored in bfloat16; trainable weights, their
  gradients and AdamW's state in float32 (the master copy the optimiser updates); the forward
  and backward run under bfloat16 autocast. The standard recipe (PyTorch AMP, Lightning's
  ``bf16-mixed``, DeepSpeed's bf16 with fp32 master weights): an update of lr 1e-5 on a weight
  of 0.02 is 1/2000 of it, far below bfloat16's resolution (1/128 to 1/256), so without the fp32
  master most such updates round away.
- ``fp16-mixed``: as bf16-mixed with float16, plus dynamic loss scaling (``GradScaler``) so small
  gradients do not underflow; for cards without bfloat16.
- ``bf16-pure``: everything in bfloat16, the optimiser included. Half the optimiser memory, but
  small updates are lost (see above); kept for memory experiments, with a warning.

``auto`` means ``bf16-mixed`` on CUDA and ``fp32`` elsewhere; the former ``bf16`` reads as
``bf16-mixed``.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass
from typing import Any

import torch

from pixelagent.errors import ConfigError

PRECISIONS = ("fp32", "bf16-mixed", "fp16-mixed", "bf16-pure")


@dataclass(frozen=True)
class Precision:
    """A resolved precision.

    Attributes:
        name: one of :data:`PRECISIONS`.
        storage: dtype name the model is built in (frozen weights stay in it).
        master_fp32: trainable weights (and so their gradients and optimiser state) in float32.
        compute: autocast dtype, or None for none.
        scaled: dynamic loss scaling (float16).
    """

    name: str
    storage: str
    master_fp32: bool
    compute: torch.dtype | None
    scaled: bool


_TABLE = {
    "fp32": Precision("fp32", "float32", True, None, False),
    "bf16-mixed": Precision("bf16-mixed", "bfloat16", True, torch.bfloat16, False),
    "fp16-mixed": Precision("fp16-mixed", "float16", True, torch.float16, True),
    "bf16-pure": Precision("bf16-pure", "bfloat16", False, torch.bfloat16, False),
}


def resolve(name: str, device: str) -> Precision:
    """``name`` from a config (``auto`` and the legacy ``bf16`` included) for ``device``."""
    if name == "auto":
        name = "bf16-mixed" if device.startswith("cuda") else "fp32"
    elif name == "bf16":
        name = "bf16-mixed"
    if name not in _TABLE:
        raise ConfigError(f"unknown precision {name!r}; use auto or one of {', '.join(PRECISIONS)}")
    if name == "bf16-pure":
        warnings.warn("precision bf16-pure keeps the optimiser in bfloat16: updates smaller than about "
                      "1/256 of a weight are lost (at lr 1e-5 most of them); use bf16-mixed unless you "
                      "are measuring memory", stacklevel=2)
    return _TABLE[name]


def prepare(model: torch.nn.Module, precision: Precision) -> None:
    """Cast the trainable parameters to float32 when the precision keeps an fp32 master copy
    (the model was built in ``precision.storage``; frozen weights stay there)."""
    if not precision.master_fp32:
        return
    for parameter in model.parameters():
        if parameter.requires_grad and parameter.dtype != torch.float32:
            parameter.data = parameter.data.float()


def autocast(precision: Precision, device: str) -> Any:
    """The autocast context of one forward/backward (a no-op for fp32)."""
    if precision.compute is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=precision.compute)


def grad_scaler(precision: Precision, device: str) -> torch.amp.GradScaler | None:
    """A dynamic loss scaler for fp16-mixed, else None."""
    if not precision.scaled:
        return None
    return torch.amp.GradScaler(torch.device(device).type)


def adamw(parameters: list[torch.nn.Parameter], device: str, **options: Any) -> torch.optim.AdamW:
    """AdamW with the batched implementation the device allows: ``fused`` on CUDA (one kernel for
    every tensor), PyTorch's own choice elsewhere (its for-loop on the CPU, which the shipped
    tiny model was trained with and which exact resume relies on)."""
    if torch.device(device).type == "cuda":
        options["fused"] = True
    return torch.optim.AdamW(parameters, **options)
