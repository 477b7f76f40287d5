"""``pixelagent batch``: one session per image of a folder, through the same questions, resumable.

For each image (the folder's image files, by name) a session asks every question in order and
writes, under ``OUT``:

- ``OUT/<image stem>/turn<k>_mask.png`` (the union of turn k's targets, 1-bit) and
  ``turn<k>_overlay.png`` (each target in its own colour), for every turn with a target;
- one line of ``OUT/results.jsonl`` (:class:`BatchRecord`): the image's name and SHA-256,
  the questions, every turn as a :class:`~pixelagent.schema.TurnRecord` (masks as COCO RLE)
  and the intent.

The line is written last, flushed and synced, so it is the commit mark of an image: a rerun
skips every image with a line (same name, same bytes) and does the rest; a line cut off by a
kill is dropped. A rerun with other questions into the same ``OUT`` is refused, so one file
never mixes two runs. An image that fails (unreadable, too large) is reported and left for
the next run; the others go on.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from pixelagent.errors import ImageError, InputError, PixelAgentError
from pixelagent.files import check_regular_file, make_output_folder, read_bytes, writing
from pixelagent.images import DEFAULT_MAX_PIXELS
from pixelagent.schema import SCHEMA_VERSION, IntentRecord, TurnRecord

if TYPE_CHECKING:
    import numpy as np

    from pixelagent.conversation import Conversation

__all__ = ["IMAGE_SUFFIXES", "RESULTS_FILE", "BatchRecord", "BatchSummary", "find_images", "run_batch"]

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
RESULTS_FILE = "results.jsonl"

#: ``open_conversation(path, pixels, data)``: a conversation about one image (local or remote).
Opener = Callable[[Path, "np.ndarray", bytes], "Conversation"]


class BatchRecord(BaseModel):
    """One line of ``results.jsonl``: an image and its whole conversation."""

    schema_version: int = SCHEMA_VERSION
    image: str  # the file's name inside the images folder
    sha256: str
    folder: str  # where its PNGs are, relative to OUT
    image_size: tuple[int, int]
    questions: list[str]
    turns: list[TurnRecord]
    intent: IntentRecord


@dataclass
class BatchSummary:
    """What a run did: images finished now, skipped as done before, and failures by name."""

    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return len(self.done) + len(self.skipped) + len(self.failed)


def find_images(folder: str | os.PathLike) -> list[Path]:
    """The image files directly inside ``folder`` (by suffix), sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder} is not a folder; pass the folder that holds the images")
    images = sorted((p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()),
                    key=lambda p: p.name)
    if not images:
        raise InputError(f"{folder} holds no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return images


def run_batch(images: list[Path], questions: list[str], out: str | os.PathLike, open_conversation: Opener, *,
              on_record: Callable[[BatchRecord], None] | None = None,
              on_failure: Callable[[str, str], None] | None = None, progress: bool = True,
              max_pixels: int | None = DEFAULT_MAX_PIXELS) -> BatchSummary:
    """Run every image in ``images`` through ``questions`` into ``out`` (see the module docstring);
    ``max_pixels`` bounds each image as :func:`pixelagent.images.load_image` does."""
    if not questions:
        raise InputError("give at least one question (--ask \"...\")")
    out = make_output_folder(out, "results folder")
    done = _finished(out / RESULTS_FILE, questions)
    folders = _folder_names(images)
    summary = BatchSummary()
    with writing(out / RESULTS_FILE, "results file"):
        results = (out / RESULTS_FILE).open("a", encoding="utf-8")
    with _progress(progress, len(images)) as advance, results:
        for path in images:
            try:
                record = _one_image(path, folders[path], questions, out, open_conversation, done, max_pixels)
            except PixelAgentError as exc:
                summary.failed[path.name] = str(exc)
                if on_failure is not None:
                    on_failure(path.name, str(exc))
            else:
                if record is None:
                    summary.skipped.append(path.name)
                else:
                    with writing(out / RESULTS_FILE, "results file"):  # what is in it stays
                        results.write(record.model_dump_json() + "\n")
                        results.flush()
                        os.fsync(results.fileno())
                    summary.done.append(path.name)
                    if on_record is not None:
                        on_record(record)
            advance(path.name)
    return summary


def _one_image(path: Path, folder: str, questions: list[str], out: Path, open_conversation: Opener,
               done: dict[str, str], max_pixels: int | None) -> BatchRecord | None:
    """The record of one image, or None when an earlier run finished it."""
    from pixelagent.images import load_image

    data = read_bytes(path, "image", max_bytes=None, error=ImageError)
    digest = hashlib.sha256(data).hexdigest()
    if done.get(path.name) == digest:
        return None
    pixels = load_image(data, max_pixels=max_pixels, name=path.name)  # decoded from the bytes read above
    conversation = open_conversation(path, pixels, data)
    try:
        turns = [conversation.ask(question) for question in questions]
        intent = conversation.record().intent
    finally:
        conversation.close()
    _write_pictures(out / folder, pixels, turns)
    return BatchRecord(image=path.name, sha256=digest, folder=folder, image_size=pixels.shape[:2],
                       questions=questions, turns=turns, intent=intent)


def _write_pictures(folder: Path, pixels: np.ndarray, turns: Iterable[TurnRecord]) -> None:
    from pixelagent.server.render import mask_png, overlay_png

    with writing(folder, "the image's folder of masks and overlays"):  # a full disk fails this image only
        folder.mkdir(parents=True, exist_ok=True)
        for record in turns:
            if record.no_target:
                continue
            turn = record.to_turn()
            (folder / f"turn{record.turn:02d}_mask.png").write_bytes(mask_png(turn) or b"")
            (folder / f"turn{record.turn:02d}_overlay.png").write_bytes(overlay_png(pixels, turn))


def _finished(results: Path, questions: list[str]) -> dict[str, str]:
    """Image name → SHA-256 of the images an earlier run finished; drops a cut-off last line."""
    if not results.exists():
        return {}
    check_regular_file(results, "results file", InputError)
    text = results.read_bytes()
    keep = text if text.endswith(b"\n") or not text else text[:text.rfind(b"\n") + 1]
    if len(keep) != len(text):  # killed while writing its last line: that image is redone
        with results.open("r+b") as handle:
            handle.truncate(len(keep))
    done: dict[str, str] = {}
    for number, line in enumerate(keep.decode("utf-8", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = BatchRecord.model_validate(json.loads(line))
        except (ValueError, ValidationError) as exc:
            raise InputError(f"{results}:{number}: not a batch result ({str(exc).splitlines()[0]}); "
                             "use another --out, or remove the file to start again") from None
        if record.questions != questions:
            raise InputError(f"{results} holds results for other questions ({record.questions!r}); use another "
                             "--out, or the same --ask questions to resume that run")
        done[record.image] = record.sha256
    return done


def _folder_names(images: list[Path]) -> dict[Path, str]:
    """The output folder of each image: its stem, or stem_suffix where two stems collide."""
    stems: dict[str, int] = {}
    for path in images:
        stems[path.stem] = stems.get(path.stem, 0) + 1
    return {p: p.stem if stems[p.stem] == 1 else f"{p.stem}_{p.suffix.lstrip('.').lower()}" for p in images}


class _progress:
    """A progress bar on stderr (rich), or nothing; ``advance(name)`` after each image."""

    def __init__(self, enabled: bool, total: int) -> None:
        self.enabled, self.total = enabled, total
        self._bar: Any = None

    def __enter__(self) -> Callable[[str], None]:
        if not self.enabled:
            return lambda name: None
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self._bar = Progress(TextColumn("batch"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                             TextColumn("{task.description}"), console=Console(stderr=True))
        self._bar.start()
        task = self._bar.add_task("", total=self.total)
        return lambda name: self._bar.update(task, advance=1, description=name)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()
