"""Finding and reading Hugging Face-style checkpoint folders, one slice of the weights at a time.

A folder is named by a local path or a hub id. Hub ids resolve through
:func:`pixelagent.hub.snapshot` (``huggingface_hub.snapshot_download``): from the local cache
only when ``HF_HUB_OFFLINE`` is set (the cache is filled with ``hf download ID``).

Weights may be in any of the four layouts ``save_pretrained`` has written over the years; the
first present wins:

- ``model.safetensors.index.json`` + ``model-0000k-of-0000n.safetensors`` shards,
- ``model.safetensors``,
- ``pytorch_model.bin.index.json`` + ``pytorch_model-0000k-of-0000n.bin`` shards (what the LISA
  releases use: two pickled shards of 9.98 GB and 6.14 GB for 7B),
- ``pytorch_model.bin``.

:class:`CheckpointFiles` reads only the tensors under the prefixes asked for, and only from the
shards that hold them (the index's ``weight_map`` says which). ``.bin`` shards are opened with
``torch.load(mmap=True, weights_only=True)``: no pickled code runs, and the untouched tensors of
a 10 GB shard are never read from disk.
"""

from __future__ import annotations

import contextlib
import json
import pickle
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch

from pixelagent.errors import CheckpointError, ConfigError, WeightsNotFoundError
from pixelagent.files import read_text

SAFE_INDEX, SAFE_SINGLE = "model.safetensors.index.json", "model.safetensors"
BIN_INDEX, BIN_SINGLE = "pytorch_model.bin.index.json", "pytorch_model.bin"
#: Weight layouts in the order they are looked for: (index file or None, single file).
LAYOUTS = ((SAFE_INDEX, None), (None, SAFE_SINGLE), (BIN_INDEX, None), (None, BIN_SINGLE))


def resolve_folder(source: str, setting: str, what: str = "checkpoint") -> Path:
    """The local folder of ``source``: a directory, or a hub id fetched into the HF cache
    (:func:`pixelagent.hub.snapshot`: the cache only when ``HF_HUB_OFFLINE`` is set).

    Raises:
        WeightsNotFoundError: one line naming ``source``, ``setting`` and, for a hub id, the
            ``hf download`` command that would fix it.
    """
    from pixelagent.hub import looks_like_hub_id, snapshot

    path = Path(source).expanduser()
    if path.is_dir():
        return path
    if path.exists() or not looks_like_hub_id(source):
        raise WeightsNotFoundError(f"{setting} = {source!r} is not a directory; point it at the folder holding the "
                                   f"{what}'s config.json and weights")
    try:
        return snapshot(source)
    except WeightsNotFoundError as exc:
        raise WeightsNotFoundError(f"{what} ({setting}): {exc}") from None


def read_json(path: Path, what: str) -> dict[str, Any]:
    """A JSON object from ``path``, or a one-line CheckpointError naming the file."""
    text = read_text(path, what, error=CheckpointError)
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise CheckpointError(f"{what} {path} is not valid JSON ({exc}); re-download the checkpoint") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{what} {path} is not a JSON object; re-download the checkpoint")
    return data


def read_config(folder: Path) -> dict[str, Any]:
    """The folder's ``config.json`` as a dict (WeightsNotFoundError when there is none)."""
    path = folder / "config.json"
    if not path.is_file():
        raise WeightsNotFoundError(f"no config.json in {folder}; is it a complete checkpoint folder?")
    return read_json(path, "checkpoint config")


class CheckpointFiles:
    """The weight files of one checkpoint folder, read slice by slice.

    Args:
        folder: a local checkpoint folder (see :func:`resolve_folder`).

    Attributes:
        weight_map: every tensor name → the file (relative to ``folder``) that holds it.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.weight_map = self._weight_map()
        self._opened: dict[str, dict[str, torch.Tensor]] = {}

    def _weight_map(self) -> dict[str, str]:
        for index, single in LAYOUTS:
            if index and (self.folder / index).is_file():
                weight_map = read_json(self.folder / index, "weight index").get("weight_map")
                if not isinstance(weight_map, dict) or not weight_map:
                    raise CheckpointError(f"{self.folder / index} has no weight_map; re-download the checkpoint")
                return {str(k): str(v) for k, v in weight_map.items()}
            if single and (self.folder / single).is_file():
                return {key: single for key in self._open(single)}
        names = ", ".join(name for pair in LAYOUTS for name in pair if name)
        raise WeightsNotFoundError(f"no weights in {self.folder} (looked for {names}); "
                                   "download the whole checkpoint, not only its config")

    def keys(self, prefix: str = "") -> list[str]:
        """Tensor names that start with ``prefix``, in the index's order."""
        return [key for key in self.weight_map if key.startswith(prefix)]

    def tensors(self, prefix: str, strip: bool = True) -> dict[str, torch.Tensor]:
        """The tensors under ``prefix`` (with it removed when ``strip``); empty if there are none.

        Tensors keep the checkpoint's dtype and stay on the CPU (memory-mapped where possible).
        """
        out = {}
        for key in self.keys(prefix):
            shard = self._open(self.weight_map[key])
            if key not in shard:
                raise CheckpointError(f"{self.folder}: the weight index puts {key} in {self.weight_map[key]}, "
                                      "which does not hold it; re-download the checkpoint")
            out[key[len(prefix):] if strip else key] = shard[key]
        return out

    def shards(self) -> list[str]:
        """The weight files, each once, in the order the index first names them."""
        return list(dict.fromkeys(self.weight_map.values()))

    def _open(self, name: str) -> dict[str, torch.Tensor]:
        if name not in self._opened:
            self._opened[name] = _load_file(self.folder / name)
        return self._opened[name]


def _load_file(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of one weight file, lazily where the format allows (safetensors, zip ``.bin``)."""
    if not path.is_file():
        raise WeightsNotFoundError(f"missing weight file {path}; the download is incomplete (re-run `hf download`)")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as exc:
            raise CheckpointError(f"{path} is not a readable safetensors file ({exc}); re-download it") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as exc:
        if "mmap" not in str(exc):
            raise CheckpointError(f"cannot read {path}: {str(exc).splitlines()[0]}; re-download it") from None
        state = _load_unmapped(path)  # a legacy (pre-zip) pickle cannot be memory-mapped
    except (pickle.UnpicklingError, EOFError, OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read {path}: {str(exc).splitlines()[0]}; re-download it") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} is not a state dict (names → tensors); is it a model checkpoint?")
    return state


def _load_unmapped(path: Path) -> dict[str, torch.Tensor]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read {path}: {str(exc).splitlines()[0]}; re-download it") from None


def cached_files(folder: Path, shared: dict[str, Any] | None) -> CheckpointFiles:
    """One :class:`CheckpointFiles` per folder within a preset build (``BuildContext.shared``).

    The parts of a folded checkpoint (LISA: LLM, projector, SAM, ``[SEG]`` projection) then
    open each shard once between them.
    """
    if shared is None:
        return CheckpointFiles(folder)
    table = shared.setdefault("pixelagent_llava.checkpoints", {})
    key = str(Path(folder).resolve())
    if key not in table:
        table[key] = CheckpointFiles(folder)
    return table[key]


def require_keys(state: dict[str, torch.Tensor], names: Iterable[str], folder: Path, what: str) -> None:
    """ConfigError naming the first missing tensors of ``what`` when ``state`` lacks any of ``names``."""
    missing = [name for name in names if name not in state]
    if missing:
        raise ConfigError(f"the checkpoint {folder} has no {what} (missing {', '.join(missing[:4])}); "
                          "is it the right kind of checkpoint?")


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """transformers' and peft's notes silenced for a block: loading reports (a folded checkpoint's
    other parts are hundreds of "unexpected" keys), progress bars, and warnings users can do
    nothing about (deprecations inside the libraries, a LLaVA-v1 config read as another type)."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning)
            warnings.filterwarnings("ignore", category=UserWarning, module="peft")
            yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()
