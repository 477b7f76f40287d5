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
def skip_random_init() -> Iterator[None]:
    """Build modules without drawing their random initial weights (``torch.nn.init`` and
    transformers' ``init_weights`` are no-ops inside): for parts whose every weight is loaded
    right after, the random draws would be thrown away (for SAM ViT-H, seconds on a CPU).
    Buffers computed in constructors (rotary frequencies, say) are still computed. Only use it
    when a strict load follows: a weight left out would hold uninitialised memory."""
    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # transformers absent: torch's own init functions are all there is
        no_init_weights = None
    import torch.nn.init as init

    names = [n for n in dir(init) if n.endswith("_") and not n.startswith("_") and callable(getattr(init, n))]
    originals = {n: getattr(init, n) for n in names}
    try:
        for name in names:
            setattr(init, name, lambda tensor, *args, **kwargs: tensor)
        with no_init_weights() if no_init_weights is not None else contextlib.nullcontext():
            yield
    finally:
        for name, function in originals.items():
            setattr(init, name, function)


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
