"""Training checkpoints: trainable weights (safetensors), optimiser, scheduler, RNG, step.

Each checkpoint is a directory ``step-00000300`` written under a temporary name and renamed
into place, so a run killed mid-write never leaves a checkpoint that looks complete. Under DDP
rank 0 writes it; every other rank's RNG state (its LoRA dropout and phrase noise draws differ
from rank 0's) goes in beside it as ``rng-rank-N.pt``, so each rank resumes its own stream.

``meta.json`` is written last and records every other file's size and SHA-256. Resuming
(:func:`resume`) checks them and tries to load each checkpoint, newest first: a damaged one
(truncated, corrupted, a file missing) is skipped with a warning naming it and why, and the
newest intact one is used. Checkpoints written before the hashes were recorded still load.
A write that fails (a full disk above all) removes its partial folder and raises
:class:`CheckpointError` naming the disk, the fix and the previous checkpoint, which is intact.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from safetensors.torch import load_file

from pixelagent.errors import CheckpointError, ConfigError
from pixelagent.nn.model import DISK_FULL, save_safetensors, single_line

STATE_FILE = "trainer_state.pt"
WEIGHTS_FILE = "trainable.safetensors"
META_FILE = "meta.json"
_HASH_CHUNK = 1 << 22


def say(message: str) -> None:
    """One line for the person running the training (stderr: stdout is for results)."""
    print(message, file=sys.stderr, flush=True)


def rank_rng_file(rank: int) -> str:
    return f"rng-rank-{rank}.pt"


def _staged_rng(root: Path, step: int, rank: int) -> Path:
    return root / f".rng-rank-{rank}-step-{step:08d}.pt"


def checkpoint_dirs(root: Path) -> list[Path]:
    """Every ``step-*`` folder under ``root``, oldest first, intact or not."""
    return sorted(p for p in root.glob("step-*") if p.is_dir())


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


# -- writing ------------------------------------------------------------------------------------
class _Writer:
    """The file object ``torch.save`` writes through, keeping the OSError a write hit.

    torch.save reports a failed write (a full disk) as ``RuntimeError: [enforce fail at
    inline_container.cc] unexpected pos``, whether given a path or a file; through this object
    the real error, with its errno, is at hand.
    """

    def __init__(self, handle) -> None:
        self.handle = handle
        self.error: OSError | None = None

    def write(self, data) -> int:
        try:
            return self.handle.write(data)
        except OSError as exc:
            self.error = exc
            raise

    def flush(self) -> None:
        self.handle.flush()


def _save_torch(obj: Any, path: Path) -> None:
    with open(path, "wb") as handle:
        writer = _Writer(handle)
        try:
            torch.save(obj, writer)
        except RuntimeError:
            if writer.error is not None:
                raise writer.error from None
            raise
        handle.flush()
        os.fsync(handle.fileno())


def _save_bytes(data: bytes, path: Path) -> None:
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _fsync(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _record(path: Path) -> dict[str, Any]:
    """Size and SHA-256 of a written file (read back, so it is what the disk holds)."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return {"size": size, "sha256": digest.hexdigest()}


def _newest_other(root: Path, step: int) -> Path | None:
    """The newest finished checkpoint before ``step`` (what a failed write leaves in place; newer
    ones can only be damaged leftovers that a resume went past)."""
    done = [p for p in checkpoint_dirs(root) if p.name < f"step-{step:08d}" and (p / META_FILE).is_file()]
    return done[-1] if done else None


def _write_failure(exc: OSError, file: Path, root: Path, step: int) -> CheckpointError:
    previous = _newest_other(root, step)
    kept = (f"the previous checkpoint {previous} is intact" if previous is not None
            else "there is no earlier checkpoint")
    reason = exc.strerror or single_line(str(exc))
    if exc.errno in DISK_FULL:
        return CheckpointError(
            f"disk full: cannot write checkpoint step {step} ({reason} while writing {file}); removed the "
            f"partial checkpoint, {kept}; free space on that disk, lower checkpoint.keep or set output_dir "
            "to another disk, then rerun with --resume")
    return CheckpointError(
        f"cannot write checkpoint step {step}: {reason} (writing {file}); removed the partial checkpoint, "
        f"{kept}; check that {root} is writable, then rerun with --resume")


def stage_rank_rng(root: Path, step: int, rank: int) -> None:
    """A non-main rank's RNG state for the checkpoint of ``step`` (collected by :func:`save_checkpoint`)."""
    staged = _staged_rng(root, step, rank)
    partial = staged.with_name(staged.name + ".part")
    try:
        root.mkdir(parents=True, exist_ok=True)
        _save_torch(rng_state(), partial)
        os.replace(partial, staged)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise _write_failure(exc, partial, root, step) from None


def discard_staged(root: Path, step: int, world_size: int) -> None:
    """Drop the ranks' staged RNG files of ``step`` (a checkpoint that will not be written)."""
    for rank in range(1, world_size):
        staged = _staged_rng(root, step, rank)
        staged.unlink(missing_ok=True)
        staged.with_name(staged.name + ".part").unlink(missing_ok=True)


def save_checkpoint(root: Path, step: int, model: torch.nn.Module, optimizer, scheduler, keep: int,
                    extra: dict[str, Any] | None = None, world_size: int = 1,
                    weights: dict[str, torch.Tensor] | None = None, optimizer_state: dict[str, Any] | None = None,
                    scaler: Any = None) -> Path:
    """Write ``root/step-XXXXXXXX`` atomically and drop all but the newest ``keep``.

    With ``world_size > 1`` the other ranks must have called :func:`stage_rank_rng` for this step.
    ``weights`` and ``optimizer_state`` are the full trainable weights and the optimiser state
    when the caller gathered them (a sharded strategy); by default they are read off ``model``
    and ``optimizer``. ``scaler`` (fp16 loss scaling) is saved with them when given.
    A failed write removes the temporary folder (and the staged RNG files) and raises
    :class:`CheckpointError`; the checkpoints already there are left as they were.
    """
    final = root / f"step-{step:08d}"
    tmp = root / f".tmp-step-{step:08d}"
    current = tmp
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for rank in range(1, world_size):
            current = tmp / rank_rng_file(rank)
            os.replace(_staged_rng(root, step, rank), current)
        current = tmp / WEIGHTS_FILE
        save_safetensors(trainable_state(model) if weights is None else weights, current)
        _fsync(current)
        current = tmp / STATE_FILE
        state = {"optimizer": optimizer.state_dict() if optimizer_state is None else optimizer_state,
                 "scheduler": scheduler.state_dict(), "rng": rng_state()}
        if scaler is not None:
            state["scaler"] = scaler.state_dict()
        _save_torch(state, current)
        files = {p.name: _record(p) for p in sorted(tmp.iterdir())}
        current = tmp / META_FILE  # last: a checkpoint without it was never finished
        _save_bytes(json.dumps({"step": step, **(extra or {}), "files": files}).encode(), current)
        shutil.rmtree(final, ignore_errors=True)  # only there when redoing a step past damaged checkpoints
        current = final
        os.replace(tmp, final)
    except BaseException as exc:  # KeyboardInterrupt too: never leave a half folder behind
        shutil.rmtree(tmp, ignore_errors=True)
        discard_staged(root, step, world_size)
        if isinstance(exc, OSError):
            raise _write_failure(exc, current, root, step) from None
        raise
    for old in checkpoint_dirs(root)[:-keep]:
        if old != final:  # damaged newer ones (resumed past them) must not push out this one
            shutil.rmtree(old, ignore_errors=True)
    return final


def clean_stale(root: Path, report: Callable[[str], None] = say) -> None:
    """Remove the temporary folders and staged RNG files of a run that was killed while saving."""
    if not root.is_dir():
        return
    for path in sorted(root.glob(".tmp-step-*")):
        shutil.rmtree(path, ignore_errors=True)
        report(f"removed {path}, an unfinished checkpoint left by an interrupted run")
    for path in sorted(root.glob(".rng-rank-*")):
        path.unlink(missing_ok=True)


# -- reading ------------------------------------------------------------------------------------
def latest_checkpoint(root: Path) -> Path | None:
    """The newest finished checkpoint under ``root`` (temporary directories are ignored; see
    :func:`resume` for the newest *intact* one)."""
    done = [p for p in checkpoint_dirs(root) if (p / META_FILE).is_file()]
    return done[-1] if done else None


class _Damaged(Exception):
    """Why a checkpoint cannot be used (becomes a warning, or part of a CheckpointError)."""


def _load_or_damaged(path: Path, load: Callable[[], Any]) -> Any:
    try:
        return load()
    except MemoryError:
        raise
    except Exception as exc:  # SafetensorError, torch's RuntimeError / EOFError / KeyError / OSError, ...
        detail = single_line(str(exc), 160) or type(exc).__name__
        raise _Damaged(f"{path.name} cannot be loaded ({type(exc).__name__}: {detail})") from None


def _read_meta(path: Path) -> dict[str, Any]:
    meta_path = path / META_FILE
    if not meta_path.is_file():
        raise _Damaged(f"{META_FILE} is missing (the checkpoint was never finished)")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise _Damaged(f"{META_FILE} is unreadable ({single_line(str(exc), 160)}; truncated?)") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("step"), int):
        raise _Damaged(f"{META_FILE} holds no step number")
    return meta


def _verify(path: Path, meta: dict[str, Any]) -> None:
    """Every file meta.json records has its size and SHA-256 (old checkpoints record none)."""
    files = meta.get("files")
    if files is None:
        return
    if not isinstance(files, dict):
        raise _Damaged(f"{META_FILE} has a malformed file list")
    for name in (WEIGHTS_FILE, STATE_FILE):
        if name not in files:
            raise _Damaged(f"{META_FILE} does not list {name}")
    for name, expected in sorted(files.items()):
        file = path / name
        if not isinstance(expected, dict) or os.sep in name or name.startswith("."):
            raise _Damaged(f"{META_FILE} has a malformed entry for {name!r}")
        if not file.is_file():
            raise _Damaged(f"{name} is missing")
        size, written = file.stat().st_size, expected.get("size")
        if size != written:
            raise _Damaged(f"{name} is {size} bytes but {written} were written (truncated or changed since)")
        if _record(file)["sha256"] != expected.get("sha256"):
            raise _Damaged(f"{name} does not match the SHA-256 recorded in {META_FILE} (corrupted)")


def _read(path: Path, rank: int) -> tuple[int, dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
    """Everything in the checkpoint, checked and in memory before anything is changed."""
    meta = _read_meta(path)
    _verify(path, meta)
    for name in (WEIGHTS_FILE, STATE_FILE):
        if not (path / name).is_file():
            raise _Damaged(f"{name} is missing")
    weights = _load_or_damaged(path / WEIGHTS_FILE, lambda: load_file(str(path / WEIGHTS_FILE)))
    # weights_only: a checkpoint is data, never code
    state = _load_or_damaged(path / STATE_FILE,
                             lambda: torch.load(path / STATE_FILE, map_location="cpu", weights_only=True))
    if not isinstance(state, dict) or not {"optimizer", "scheduler", "rng"} <= set(state):
        raise _Damaged(f"{STATE_FILE} lacks the optimizer, scheduler or RNG state")
    rng = state["rng"]
    own = path / rank_rng_file(rank)
    if rank and own.is_file():
        rng = _load_or_damaged(own, lambda: torch.load(own, weights_only=True))
    return meta["step"], weights, state, rng


def _apply(path: Path, loaded, model: torch.nn.Module, optimizer, scheduler, load: Loader | None = None,
           scaler: Any = None) -> int:
    step, weights, state, rng = loaded
    expected = {n for n, p in model.named_parameters() if p.requires_grad}
    if set(weights) != expected:
        raise ConfigError(f"checkpoint {path} does not fit this model: {len(set(weights) ^ expected)} "
                          "trainable tensors differ; was it written with another config?")
    try:
        if load is None:
            model.load_state_dict(weights, strict=False)
            optimizer.load_state_dict(state["optimizer"])
        else:
            load(weights, state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if scaler is not None and "scaler" in state:
            scaler.load_state_dict(state["scaler"])
    except (RuntimeError, ValueError, KeyError) as exc:
        raise ConfigError(f"checkpoint {path} does not fit this model ({single_line(str(exc), 200)}); "
                          "was it written with another config?") from None
    set_rng_state(rng)
    return step


#: Restores full trainable weights and the optimiser state into a (possibly sharded) model.
Loader = Callable[[dict[str, torch.Tensor], dict[str, Any]], None]


def load_checkpoint(path: Path, model: torch.nn.Module, optimizer, scheduler, rank: int = 0) -> int:
    """Restore everything saved by :func:`save_checkpoint`; returns the step to continue after.

    ``rank`` > 0 restores that rank's own RNG state when the checkpoint has it (rank 0's otherwise).
    A damaged checkpoint raises :class:`CheckpointError` before anything is changed.
    """
    try:
        loaded = _read(path, rank)
    except _Damaged as exc:
        raise CheckpointError(f"checkpoint {path} is damaged: {exc}; delete that folder to resume from "
                              "an older checkpoint") from None
    return _apply(path, loaded, model, optimizer, scheduler)


def resume(root: Path, model: torch.nn.Module, optimizer, scheduler, rank: int = 0,
           report: Callable[[str], None] = say, load: Loader | None = None,
           scaler: Any = None) -> tuple[Path, int] | None:
    """Load the newest intact checkpoint under ``root``; returns it and its step, None if none exists.

    Damaged checkpoints are skipped, each with a warning through ``report``; when every one is
    damaged, :class:`CheckpointError` names them and the ways out. Every rank of a DDP run
    checks the same files (rank N's RNG file included, through meta.json), so all pick the same.
    """
    candidates = checkpoint_dirs(root)
    skipped: list[str] = []
    for path in reversed(candidates):
        try:
            loaded = _read(path, rank)
        except _Damaged as exc:
            report(f"warning: skipping damaged checkpoint {path}: {exc}")
            skipped.append(f"{path.name} ({exc})")
            continue
        step = _apply(path, loaded, model, optimizer, scheduler, load, scaler)
        note = f", the newest intact one ({len(skipped)} newer damaged checkpoint(s) skipped)" if skipped else ""
        report(f"resuming from checkpoint {path} (step {step}){note}")
        return path, step
    if skipped:
        raise CheckpointError(f"no intact checkpoint under {root} to resume from: " + "; ".join(skipped)
                              + "; delete the damaged step-* folders to start again from step 0, "
                              "or set output_dir to a new folder")
    return None
