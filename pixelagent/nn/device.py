"""Device and dtype names → torch objects, and seeded RNG blocks: one place for the whole code base."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from pixelagent.errors import ConfigError

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def torch_dtype(name: str) -> torch.dtype:
    """``"float32"`` / ``"bfloat16"`` / ``"float16"`` → the torch dtype."""
    try:
        return _DTYPES[name]
    except KeyError:
        raise ConfigError(f"unknown dtype {name!r}; use one of {', '.join(_DTYPES)}") from None


def torch_device(name: str) -> torch.device:
    """A device string (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``) → ``torch.device``."""
    try:
        return torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"unknown device {name!r}: {exc}") from None


@contextlib.contextmanager
def building_on(device: str, dtype: str) -> Iterator[None]:
    """Construct modules directly on ``device`` in ``dtype``: a randomly initialised 7B model is
    then never materialised as float32 on the CPU first (28 GB), and on the ``meta`` device it
    takes no memory at all (what ``plan-memory`` builds). ``torch.set_default_dtype`` is
    process-global: use this for random-init builds, not concurrently with other work."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch_dtype(dtype))
    try:
        with torch_device(device):
            yield
    finally:
        torch.set_default_dtype(previous)


@contextlib.contextmanager
def seeded_rng(seed: int) -> Iterator[None]:
    """Run a block with torch's CPU and CUDA generators seeded with ``seed``, then restore them.

    ``torch.manual_seed`` seeds every CUDA device too, so forking only the CPU generator would
    leave the caller's CUDA streams reset; this forks all of them.
    """
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield
