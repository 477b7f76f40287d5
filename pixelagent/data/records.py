"""The canonical on-disk format of pixelagent datasets: JSON Lines of validated records.

A dataset is a directory::

    DIR/
      train.jsonl  val.jsonl  test.jsonl     one PristRecord per line
      images/...                             image files, referenced by relative path

Each record is one dialogue about one image. Its answers carry ``[OBJ]phrase[SEG]`` markup and
``targets`` holds one annotation per ``[SEG]``, in order, with the mask as COCO RLE (and the
polygons where they are known, for export to the published LabelMe-based format).

A record's ``image`` is confined to its dataset directory (:func:`check_relative_path`, a lexical
rule: no absolute path, drive, UNC share, NUL byte, backslash or ``..`` that climbs out;
symlinks inside the directory are not resolved, so ``images/`` may link to a shared folder), and
everything that joins a dataset directory with a record's image goes through
:func:`resolve_in`. Reading is bounded: :func:`read_records` refuses FIFOs, devices and
directories before opening them, reports bytes that are not UTF-8 as ``file:line`` and refuses
a line longer than :data:`MAX_RECORD_BYTES`.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pixelagent.errors import ConfigError
from pixelagent.files import check_regular_file
from pixelagent.images import DEFAULT_MAX_PIXELS
from pixelagent.markup import find_focus_spans
from pixelagent.mask import Granularity, Mask

Split = Literal["train", "val", "test"]
SPLITS: tuple[str, ...] = ("train", "val", "test")
Coordinate = Annotated[float, Field(allow_inf_nan=False)]
Polygon = list[tuple[Coordinate, Coordinate]]

#: Longest line :func:`read_records` accepts: 64 MiB. A record holds its masks as compressed
#: RLE (a few KB, a few MB for intricate masks on very large images); a longer "line" is a file
#: that is not JSON Lines (a binary file, a file without newlines), and reading it whole would
#: fill memory.
MAX_RECORD_BYTES = 64 << 20
#: Longest image path a record may hold (characters).
MAX_PATH_CHARS = 4096

_DRIVE = re.compile(r"^[A-Za-z]:")


def check_relative_path(path: Any, what: str = "image path") -> str:
    """``path`` unchanged if it is a relative path that stays inside its folder, else ConfigError.

    The rule is lexical and the same on every platform: refused are non-strings, empty paths,
    absolute paths (``/x``), drive letters (``C:x``) and UNC shares (``//host/x``), backslashes
    (a separator on Windows, so ``..\\x`` would climb out there), NUL and other control
    characters, and any path whose normalised form leaves the folder (``../x``,
    ``images/../../x``) or is the folder itself (``.``). Symlinks are not resolved: a dataset
    may link ``images/`` to a shared folder. ConfigError is a ValueError, so pydantic validators
    can call this directly.
    """
    if not isinstance(path, str):
        raise ConfigError(f"{what} must be a string, got {type(path).__name__}")
    shown = repr(path) if len(path) <= 200 else repr(path[:200]) + "..."
    if not path.strip():
        raise ConfigError(f"{what} is empty; give a path relative to the dataset folder")
    if len(path) > MAX_PATH_CHARS:
        raise ConfigError(f"{what} {shown} is {len(path):,} characters, over the {MAX_PATH_CHARS:,} allowed")
    if any(ord(c) < 32 or ord(c) == 127 for c in path):
        raise ConfigError(f"{what} {shown} contains a control character (NUL, newline, ...); "
                          "give a plain relative path")
    if "\\" in path:
        raise ConfigError(f"{what} {shown} contains a backslash; write paths with forward slashes, "
                          "relative to the dataset folder")
    if path.startswith("/") or _DRIVE.match(path):
        raise ConfigError(f"{what} {shown} is absolute; give it relative to the dataset folder (put the "
                          "images inside the folder, or link a folder there)")
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        raise ConfigError(f"{what} {shown} is not valid text (a lone surrogate); use a UTF-8 path") from None
    depth = 0
    for part in path.split("/"):
        if part == "..":
            depth -= 1
            if depth < 0:
                raise ConfigError(f"{what} {shown} climbs out of the dataset folder with '..'; give a path "
                                  "inside it (link a folder there to use images kept elsewhere)")
        elif part not in ("", "."):
            depth += 1
    if posixpath.normpath(path) == ".":
        raise ConfigError(f"{what} {shown} names the dataset folder itself, not a file")
    return path


def resolve_in(directory: str | os.PathLike, relative: Any, where: str, what: str = "image path") -> Path:
    """``directory / relative`` after :func:`check_relative_path`; ConfigError prefixed ``where``.

    Lexical only, like :func:`check_relative_path`: symlinks below ``directory`` are followed
    when the file is opened, never resolved here.
    """
    try:
        return Path(directory) / check_relative_path(relative, what)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _check_rle_size(value: Any) -> Any:
    """Refuse an RLE whose ``size`` is over the pixel limit before it is decoded (allocated)."""
    if isinstance(value, dict) and isinstance(value.get("size"), (list, tuple)) and len(value["size"]) == 2:
        h, w = value["size"]
        if isinstance(h, int) and isinstance(w, int) and h * w > DEFAULT_MAX_PIXELS:
            raise ValueError(f"mask size {h}x{w} is {h * w:,} pixels, over the limit of "
                             f"{DEFAULT_MAX_PIXELS:,} (pixelagent.images.DEFAULT_MAX_PIXELS)")
    return value


class Message(BaseModel):
    """One utterance: ``role`` is "user" or "assistant"."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    role: Literal["user", "assistant"]
    text: str


class TargetAnnotation(BaseModel):
    """The ground truth of one ``[SEG]``.

    Attributes:
        phrase: the focus phrase (what ``[OBJ]…[SEG]`` names).
        mask: the target's pixels (COCO RLE on disk); None where the source has no masks
            (the published test split ships without its LabelMe files).
        polygons: outlines in pixel (x, y), as an annotator drew them, when known.
        kind: "object", "part" or "text" where the source says so.
        parent: the whole object a part or word belongs to, where known (PRIST-Synth writes
            it): evaluation uses it to check that a fine target's mask is the target, not its
            object.
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    phrase: str
    mask: Optional[Mask] = None
    polygons: list[Polygon] = []
    kind: Optional[Literal["object", "part", "text"]] = None
    parent: Optional[Mask] = None

    _mask_size = field_validator("mask", "parent", mode="before")(_check_rle_size)

    @property
    def granularity(self) -> Granularity | None:
        return None if self.mask is None else self.mask.granularity


class PristRecord(BaseModel):
    """One multi-turn segmentation dialogue about one image.

    ``messages`` alternate user / assistant, starting with the user; the assistant's ``[SEG]``
    tokens match ``targets`` one to one, in order. ``image`` is relative to the dataset
    directory; ``image_size`` is (H, W). ``elements`` and ``reasoning_path`` keep the
    generation pipeline's intermediate results (paper Figure 7a/7b) where there are any.
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    id: str
    image: str
    image_size: Optional[tuple[int, int]] = None
    messages: list[Message] = Field(min_length=2)
    focus: str
    targets: list[TargetAnnotation] = []
    split: Optional[Split] = None
    source: str = "prist"
    elements: list[dict] = []
    reasoning_path: list[str] = []

    @field_validator("image")
    @classmethod
    def _confined(cls, image: str) -> str:
        return check_relative_path(image)

    @field_validator("image_size")
    @classmethod
    def _plausible_size(cls, size: Optional[tuple[int, int]]) -> Optional[tuple[int, int]]:
        if size is not None:
            if min(size) < 1:
                raise ValueError(f"image_size {tuple(size)} must be two positive integers (H, W)")
            if size[0] * size[1] > DEFAULT_MAX_PIXELS:
                raise ValueError(f"image_size {size[0]}x{size[1]} is over the limit of {DEFAULT_MAX_PIXELS:,} "
                                 "pixels (pixelagent.images.DEFAULT_MAX_PIXELS)")
        return size

    @model_validator(mode="after")
    def _consistent(self) -> PristRecord:
        roles = [m.role for m in self.messages]
        if roles != ["user", "assistant"] * (len(roles) // 2) or len(roles) % 2:
            raise ValueError("messages must alternate user, assistant, ... and end with the assistant")
        seg_count = sum(len(find_focus_spans(m.text)) for m in self.messages if m.role == "assistant")
        if self.targets and len(self.targets) != seg_count:
            raise ValueError(f"{seg_count} [SEG] tokens in the answers but {len(self.targets)} targets")
        for target in self.targets:
            if target.mask is not None and self.image_size and target.mask.shape != tuple(self.image_size):
                raise ValueError(f"mask of {target.phrase!r} is {target.mask.shape}, image is {self.image_size}")
        return self

    @property
    def turns(self) -> list[tuple[str, str]]:
        """(question, answer) pairs."""
        return [(self.messages[i].text, self.messages[i + 1].text) for i in range(0, len(self.messages), 2)]

    @property
    def seg_count(self) -> int:
        return sum(len(find_focus_spans(a)) for _, a in self.turns)


def read_records(path: str | os.PathLike) -> Iterator[PristRecord]:
    """Records of one JSON Lines file; a bad line raises ConfigError naming file, line and field.

    Refuses a FIFO, device or directory before opening it, and reports bytes that are not UTF-8
    and lines over :data:`MAX_RECORD_BYTES` with their ``file:line``.
    """
    path = check_regular_file(path, "records file")
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    with handle:
        number = 0
        while True:
            try:
                raw = handle.readline(MAX_RECORD_BYTES + 1)
            except OSError as exc:
                raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
            if not raw:
                return
            number += 1
            where = f"{path}:{number}"
            if len(raw) > MAX_RECORD_BYTES:
                raise ConfigError(f"{where}: line longer than {MAX_RECORD_BYTES:,} bytes; is {path.name} "
                                  "a JSON Lines file (one record per line)?")
            line = _decode_line(raw[3:] if number == 1 and raw.startswith(b"\xef\xbb\xbf") else raw, where)
            if line.strip():
                yield parse_record(line, where)


def _decode_line(raw: bytes, where: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{where}: not UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1}); "
                          "save the file as UTF-8") from None


def describe_validation_error(exc: ValidationError) -> str:
    """A pydantic ValidationError as one line: ``field: problem; field: problem``."""
    problems = []
    for error in exc.errors():
        field = ".".join(str(p) for p in error["loc"]) or "<record>"
        message = " ".join(str(error["msg"]).removeprefix("Value error, ").split())
        problems.append(f"{field}: {message}")
    return "; ".join(problems)


def parse_record(line: str, where: str) -> PristRecord:
    """One record from its JSON text; ``where`` ("file:line") goes into the error message."""
    try:
        return PristRecord.model_validate_json(line)
    except ValidationError as exc:
        raise ConfigError(f"{where}: invalid record: {describe_validation_error(exc)}") from None


def write_records(path: str | os.PathLike, records: Iterable[PristRecord], append: bool = False) -> int:
    """Write (or append) records as JSON Lines; returns how many were written.

    Writing (not appending) goes to a temporary file beside ``path`` that replaces it once
    complete, so an interrupted write never leaves a half file (the old one stays).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if append:
            with path.open("a", encoding="utf-8") as handle:
                return _write_lines(handle, records)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            with temporary.open("w", encoding="utf-8") as handle:
                count = _write_lines(handle, records)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, path)
        finally:
            temporary.unlink(missing_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from None
    return count


def _write_lines(handle, records: Iterable[PristRecord]) -> int:
    count = 0
    for record in records:
        handle.write(record.model_dump_json(exclude_defaults=True) + "\n")
        count += 1
    return count


def split_path(directory: str | os.PathLike, split: str) -> Path:
    """``DIR/<split>.jsonl``, refusing unknown split names."""
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    return Path(directory) / f"{split}.jsonl"


def load_split(directory: str | os.PathLike, split: str) -> list[PristRecord]:
    """All records of one split of a canonical dataset directory."""
    path = split_path(directory, split)
    if not os.path.lexists(path):
        present = sorted(p.stem for p in Path(directory).glob("*.jsonl")) or ["none"]
        raise ConfigError(f"no {split} split in {directory} (looked for {path.name}); "
                          f"splits there: {', '.join(present)}")
    return list(read_records(path))
