"""What a training dataloader gets: one image, a dialogue, and one mask per ``[SEG]``.

Every training-data adapter (:mod:`pixelagent.data.adapters`) turns its format into
:class:`TrainingExample` objects through the :class:`Dataset` protocol, and the mixer
(:mod:`pixelagent.data.mixing`) draws from several such datasets. Nothing here imports torch, so
datasets can be built and indexed cheaply in dataloader workers.

Determinism: an adapter's ``dataset[i]`` depends only on its constructor arguments and ``i``.
Random choices (templates, classes, sentences) come from :func:`seeded_rng`, which derives its
seed from the key with BLAKE2b, never from Python's per-process salted ``hash``.
"""

from __future__ import annotations

import hashlib
import json
import operator
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import yaml
from PIL import Image

from pixelagent.errors import ConfigError, ImageError, InputError
from pixelagent.files import check_regular_file, read_text
from pixelagent.images import DEFAULT_MAX_PIXELS
from pixelagent.images import load_image as _load_image
from pixelagent.markup import SEG_TOKEN

__all__ = ["Dataset", "TrainingExample", "check_image_name", "check_images_exist", "check_index", "existing_path",
           "image_in", "no_masks", "read_json", "read_yaml", "seeded_rng", "stable_int"]


@dataclass(frozen=True, eq=False)
class TrainingExample:
    """One training sample.

    Attributes:
        source: the name of the dataset it came from (what the mixer calls a source).
        id: stable within its source (an annotation id, a record id, an image stem).
        turns: ``(question, answer)`` pairs; answers mark targets as ``[OBJ]phrase[SEG]``.
        masks: bool array ``(n, H, W)``, one mask per ``[SEG]`` of the answers, in order. With
            no ``[SEG]`` (VQA, captions) it is ``(0, 0, 0)`` unless the size is known.
        image: path of the image file, read only by :meth:`load_image` (lazily, in the worker).
        pixels: the image itself, RGB ``(H, W, 3)`` uint8, for in-memory sources.
            Neither ``image`` nor ``pixels``: a text-only example.
        exif_orientation: apply the file's EXIF orientation when loading ``image``. COCO, ADE20K
            and Mapillary masks were drawn on the pixels as stored, so their adapters set False
            (a handful of COCO photos carry a rotation tag); LabelMe (PRIST) applies it.
    """

    source: str
    id: str
    turns: list[tuple[str, str]]
    masks: np.ndarray
    image: Path | None = None
    pixels: np.ndarray | None = None
    exif_orientation: bool = True

    def __post_init__(self) -> None:
        if self.image is not None and self.pixels is not None:
            raise InputError(f"example {self.id}: give image or pixels, not both")
        masks = self.masks
        if not isinstance(masks, np.ndarray) or masks.dtype != np.bool_ or masks.ndim != 3:
            raise InputError(f"example {self.id}: masks must be a bool (n, H, W) array, got "
                             f"{getattr(masks, 'dtype', type(masks).__name__)} {getattr(masks, 'shape', '')}")
        if masks.shape[0] != self.seg_count:
            raise InputError(f"example {self.id}: {self.seg_count} [SEG] in the answers but {masks.shape[0]} masks")
        masks.setflags(write=False)  # frozen example: a worker must not change a shared mask in place

    @property
    def seg_count(self) -> int:
        """How many ``[SEG]`` tokens the answers hold (= ``len(masks)``)."""
        return sum(answer.count(SEG_TOKEN) for _, answer in self.turns)

    @property
    def has_image(self) -> bool:
        return self.image is not None or self.pixels is not None

    def load_image(self) -> np.ndarray:
        """The image as RGB ``uint8`` ``(H, W, 3)`` (a new array); InputError for text-only examples."""
        if self.pixels is not None:
            return _load_image(self.pixels)
        if self.image is None:
            raise InputError(f"example {self.id} from {self.source} is text-only: it has no image")
        if self.exif_orientation:
            return _load_image(self.image)
        return _load_stored_orientation(self.image)


def _load_stored_orientation(path: Path) -> np.ndarray:
    """RGB ``(H, W, 3)`` uint8 of the pixels as stored (no EXIF rotation), size-checked first."""
    check_regular_file(path, "image", error=ImageError)  # a FIFO would block Image.open
    try:
        with Image.open(path) as image:
            if image.width * image.height > DEFAULT_MAX_PIXELS:
                raise ImageError(f"{path}: {image.width}x{image.height} exceeds {DEFAULT_MAX_PIXELS} pixels")
            alpha = image.mode in ("RGBA", "LA", "PA", "P") and (image.mode != "P" or "transparency" in image.info)
            pixels = np.asarray(image.convert("RGBA" if alpha else "RGB"))
    except ImageError:
        raise
    except (OSError, SyntaxError, ValueError) as exc:  # how Pillow reports missing or corrupt files
        raise ImageError(f"cannot read the image {path}: {exc}") from None
    return _load_image(pixels)  # same alpha compositing and dtype contract as every other image


@runtime_checkable
class Dataset(Protocol):
    """What the mixer and the trainers need: a name, a length, and examples by index."""

    name: str

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> TrainingExample: ...


def no_masks() -> np.ndarray:
    """The ``masks`` of an example without ``[SEG]``: shape ``(0, 0, 0)``."""
    return np.zeros((0, 0, 0), dtype=bool)


def stable_int(*key: Any) -> int:
    """A 64-bit integer from ``repr(key)``, identical in every process (unlike ``hash``)."""
    digest = hashlib.blake2b(repr(key).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def seeded_rng(*key: Any) -> random.Random:
    """A ``random.Random`` seeded from ``key`` (e.g. ``(seed, index)``) via :func:`stable_int`."""
    return random.Random(stable_int(*key))


def check_index(index: Any, length: int, name: str) -> int:
    """``index`` as a non-negative int below ``length`` (negative counts from the end)."""
    try:
        i = operator.index(index)
    except TypeError:
        raise TypeError(f"{name} indices must be integers, not {type(index).__name__}") from None
    if i < 0:
        i += length
    if not 0 <= i < length:
        raise IndexError(f"{name}: index {index} out of range for {length} examples")
    return i


def read_json(path: str | Path, what: str) -> Any:
    """Parse a JSON file; ConfigError naming the file when it is missing, not a regular file,
    not UTF-8 or malformed."""
    path = Path(path)
    text = read_text(path, f"the {what}")
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"the {what} {path} is not valid JSON: {exc}") from None
    except RecursionError:
        raise ConfigError(f"the {what} {path} is nested too deeply to be read") from None


def read_yaml(path: str | Path, what: str) -> Any:
    """Parse a YAML file (safe loader); ConfigError naming the file when it is missing or malformed."""
    path = Path(path)
    text = read_text(path, f"the {what}")
    try:
        return yaml.safe_load(text)
    except (yaml.YAMLError, RecursionError) as exc:
        raise ConfigError(f"the {what} {path} is not valid YAML: {' '.join(str(exc).split())}") from None


def check_image_name(name: Any, where: str) -> str:
    """``name`` if it is an image path that stays inside its images folder, else ConfigError
    prefixed ``where`` (the rule of :func:`pixelagent.data.records.check_relative_path`)."""
    from pixelagent.data.records import check_relative_path

    try:
        return check_relative_path(name, "image path")
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def image_in(images_dir: Path, name: Any, where: str) -> Path:
    """``images_dir / name`` after :func:`check_image_name` (lexical: symlinks are not resolved)."""
    return Path(images_dir) / check_image_name(name, where)


def existing_path(path: str | Path, what: str, kind: str = "file") -> Path:
    """``path`` as a Path, or ConfigError when it is not an existing ``kind`` ("file" or "dir")."""
    path = Path(path)
    ok = path.is_dir() if kind == "dir" else path.is_file()
    if not ok:
        state = "does not exist" if not path.exists() else f"is not a {'directory' if kind == 'dir' else 'file'}"
        raise ConfigError(f"the {what} {path} {state}")
    return path


def check_images_exist(images_dir: Path, names: list[str], where: str) -> None:
    """ConfigError listing (the first few of) ``names`` missing under ``images_dir``."""
    missing = [name for name in names if not image_in(images_dir, name, where).is_file()]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise ConfigError(f"{where}: {len(missing)} image(s) missing under {images_dir}: {shown}")
