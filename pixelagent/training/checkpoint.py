"""Training checkpoints: trainable weights (safetensors), optimiser, scheduler, RNG, step.

Each checkpoint is a directory ``step-00000300`` written under a temporary name and renamed
into place, so a run killed mid-write never leaves a checkpoint that looks complete. Under DDP
rank 0 writes it; every other rank's RNG state (its LoRA dropout and phrase noise draws differ
from rank 0's) goes in beside it as ``rng-rank-N.pt``, so each rank resumes its own stream.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from pixelagent.errors import ConfigError

STATE_FILE = "trainer_state.pt"
WEIGHTS_FILE = "trainable.safetensors"
META_FILE = "meta.json"


def rank_rng_file(rank: int) -> str:
    return f"rng-rank-{rank}.pt"


def _staged_rng(root: Path, step: int, rank: int) -> Path:
    return root / f".rng-rank-{rank}-step-{step:08d}.pt"


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The parameters that train, by name (what a checkpoint must restore)."""
    return {n: p.detach().contiguous().cpu() for n, p in model.named_parameters() if p.requires_grad}


def rng_state() -> dict[str, Any]:
    """Every RNG the loop touches, as tensors and plain values (loadable with weights_only)."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": [version, list(internal), gauss],
             "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def stage_rank_rng(root: Path, step: int, rank: int) -> None:
    """A non-main rank's RNG state for the checkpoint of ``step`` (collected by :func:`save_checkpoint`)."""
    root.mkdir(parents=True, exist_ok=True)
    staged = _staged_rng(root, step, rank)
    partial = staged.with_name(staged.name + ".part")
    torch.save(rng_state(), partial)
    os.replace(partial, staged)


def save_checkpoint(root: Path, step: int, model: torch.nn.Module, optimizer, scheduler, keep: int,
                    extra: dict[str, Any] | None = None, world_size: int = 1) -> Path:
    """Write ``root/step-XXXXXXXX`` atomically and drop all but the newest ``keep``.

    With ``world_size > 1`` the other ranks must have called :func:`stage_rank_rng` for this step.
    """
    final = root / f"step-{step:08d}"
    tmp = root / f".tmp-step-{step:08d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for rank in range(1, world_size):
        os.replace(_staged_rng(root, step, rank), tmp / rank_rng_file(rank))
    save_file(trainable_state(model), str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng_state()},
               tmp / STATE_FILE)
    (tmp / META_FILE).write_text(json.dumps({"step": step, **(extra or {})}))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    for old in sorted(root.glob("step-*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(root: Path) -> Path | None:
    """The newest complete checkpoint under ``root`` (temporary directories are ignored)."""
    done = sorted(p for p in root.glob("step-*") if (p / META_FILE).is_file())
    return done[-1] if done else None


def load_checkpoint(path: Path, model: torch.nn.Module, optimizer, scheduler, rank: int = 0) -> int:
    """Restore everything saved by :func:`save_checkpoint`; returns the step to continue after.

    ``rank`` > 0 restores that rank's own RNG state when the checkpoint has it (rank 0's otherwise).
    """
    weights = load_file(str(path / WEIGHTS_FILE))
    expected = {n for n, p in model.named_parameters() if p.requires_grad}
    if set(weights) != expected:
        raise ConfigError(f"checkpoint {path} does not fit this model: {len(set(weights) ^ expected)} "
                          "trainable tensors differ; was it written with another config?")
    model.load_state_dict(weights, strict=False)
    # weights_only: a checkpoint is data, never code
    state = torch.load(path / STATE_FILE, map_location="cpu", weights_only=True)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    own = path / rank_rng_file(rank)
    set_rng_state(torch.load(own, weights_only=True) if rank and own.is_file() else state["rng"])
    return json.loads((path / META_FILE).read_text())["step"]
