"""The three-step PRIST generation pipeline (paper §3.2, Figure 7) against an OpenAI-compatible
chat endpoint, producing canonical :class:`~pixelagent.data.records.PristRecord` lines.

Per image: (1) element extraction, (2) a reasoning tree with three reasoning paths, (3) one
multi-turn dialogue per path ending on a focus object. We then add the closing segmentation turn
(a templated request answered with ``[OBJ]{focus}[SEG]``) and write one record per dialogue,
with ``targets=[TargetAnnotation(phrase=focus)]`` and no mask: annotators draw masks later.

Runs are resumable: an image's records are appended (and fsynced) together once all of them
exist, images already in the output are skipped on restart, and an image that fails (after the
client's retries and JSON repairs) is logged to ``failures.jsonl`` and retried on the next run.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional, TypeVar, Union

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, model_validator

from pixelagent.data import prompts
from pixelagent.data.records import Message, PristRecord, TargetAnnotation, check_relative_path, split_path
from pixelagent.errors import ConfigError, InputError
from pixelagent.images import image_size, load_image
from pixelagent.llm.client import ChatClient, LLMError, image_content
from pixelagent.markup import format_focus, render_plain

__all__ = ["Dialogue", "DialogueSet", "Element", "ElementList", "GenerateReport", "ReasoningTree",
           "agenerate_dataset", "build_records", "generate_dataset"]

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
FAILURES_FILE = "failures.jsonl"
RECORD_SOURCE = "generated"
# Errors that no other image would escape (bad key, no access, wrong URL or model): stop the run
# instead of logging the same failure for every image.
_FATAL_STATUSES = frozenset({401, 403, 404})
Progress = Callable[[int, int, Optional[str]], None]
T = TypeVar("T")


# -- Step 1: visual elements (Figure 7a) --------------------------------------------------------
class Element(BaseModel):
    """One visible element. Extra attributes the model adds (colour, position, ...) are kept."""

    model_config = ConfigDict(extra="allow")

    name: str = Field(min_length=1)
    text: str = ""
    number: Union[int, float, str, None] = None
    caption: str = ""


class ElementList(BaseModel):
    elements: list[Element] = Field(min_length=3)


# -- Step 2: reasoning tree (Figure 7b; the paper spells several keys two ways) ----------------
class ReasoningPath(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    path_name: str = Field(validation_alias=AliasChoices("path_name", "path name", "pathName", "name"))
    path_description: str = Field(validation_alias=AliasChoices(
        "path_description", "path description", "description"))
    reasoning_question: str = Field(default="", validation_alias=AliasChoices(
        "reasoning_question", "reasoning question", "question"))


class InferenceNode(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    node_name: str = Field(validation_alias=AliasChoices("node_name", "node name", "name"))
    overlap: str = ""
    reasoning_paths: list[ReasoningPath] = Field(
        min_length=1, validation_alias=AliasChoices("reasoning_paths", "reasoning paths"))


class ReasoningTree(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    root_node: str = Field(validation_alias=AliasChoices("root node", "root_node", "root"))
    levels: list[Any] = []
    inference_nodes: list[InferenceNode] = Field(
        min_length=1, validation_alias=AliasChoices("inference_nodes", "inference nodes"))

    def path_descriptions(self) -> list[list[str]]:
        """Descriptions grouped by path ("Path 1", "Path 2", ...), in path order; a path that
        runs through several (overlapping) nodes collects one description per node."""
        groups: dict[Any, list[str]] = {}
        for node in self.inference_nodes:
            for path in node.reasoning_paths:
                groups.setdefault(_path_key(path.path_name), []).append(path.path_description)
        numbered = sorted((k, v) for k, v in groups.items() if isinstance(k, int))
        named = [(k, v) for k, v in groups.items() if not isinstance(k, int)]
        return [v for _, v in numbered + named]


def _path_key(name: str) -> Union[int, str]:
    match = re.search(r"\d+", name)
    return int(match.group()) if match else name.strip().lower()


# -- Step 3: dialogues (Figure 7c: {"Question1": {"Q1", "A1", ..., "Focus"}, ...}) ---------------
class Dialogue(BaseModel):
    turns: list[tuple[str, str]] = Field(min_length=2)
    focus: str = Field(min_length=1)


class DialogueSet(BaseModel):
    dialogues: list[Dialogue] = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _from_questions(cls, data: Any) -> Any:
        if isinstance(data, dict) and "dialogues" not in data:
            keyed = sorted((_number(k, "question"), v) for k, v in data.items() if _number(k, "question"))
            if not keyed:
                raise ValueError('expected keys "Question1", "Question2", ... holding one dialogue each')
            return {"dialogues": [_dialogue_fields(value, n) for n, value in keyed]}
        return data


def _number(key: str, prefix: str) -> int:
    """N for keys like "Question2", "question_2", "Q2"; 0 when ``key`` is not of that form."""
    match = re.fullmatch(rf"\s*{prefix}[\s_]*(\d+)\s*", str(key), re.IGNORECASE)
    return int(match.group(1)) if match else 0


def _dialogue_fields(value: Any, number: int) -> dict:
    """{"Q1", "A1", ..., "Focus"} → {"turns": [(q, a), ...], "focus": ...}, checking the pairs."""
    if not isinstance(value, dict):
        raise ValueError(f"Question{number} must be an object with Q1, A1, ..., Focus")
    questions = {_number(k, "q"): v for k, v in value.items() if _number(k, "q")}
    answers = {_number(k, "a"): v for k, v in value.items() if _number(k, "a")}
    if not questions or set(questions) != set(answers):
        raise ValueError(f"Question{number}: every Qn needs an An (got {sorted(value)})")
    focus = next((v for k, v in value.items() if str(k).strip().lower() == "focus"), None)
    if not isinstance(focus, str) or not _clean(focus):
        raise ValueError(f'Question{number}: missing "Focus" (the final focus object)')
    turns = [(_clean(str(questions[n])), _clean(str(answers[n]))) for n in sorted(questions)]
    return {"turns": turns, "focus": _clean(focus)}


def _clean(text: str) -> str:
    """Generated text must not carry the special tokens: only the closing answer has them."""
    return " ".join(render_plain(text).split())


# -- records ---------------------------------------------------------------------------------------
def build_records(stem: str, image_ref: str, size: tuple[int, int], dialogues: DialogueSet,
                  elements: ElementList, tree: ReasoningTree, split: str) -> list[PristRecord]:
    """One record per dialogue (id ``{stem}-{k}``, k from 1), with the segmentation turn added."""
    paths = tree.path_descriptions()
    element_dicts = [e.model_dump(exclude_none=True) for e in elements.elements]
    return [
        PristRecord(id=f"{stem}-{k}", image=image_ref, image_size=size, split=split,
                    messages=_messages(dialogue, f"{stem}-{k}"), focus=dialogue.focus,
                    targets=[TargetAnnotation(phrase=dialogue.focus)], source=RECORD_SOURCE,
                    elements=element_dicts, reasoning_path=paths[k - 1] if k <= len(paths) else [])
        for k, dialogue in enumerate(dialogues.dialogues, start=1)
    ]


def _messages(dialogue: Dialogue, record_id: str) -> list[Message]:
    # Seeded by the record id: a rerun picks the same templates, and the choice is spread evenly.
    rng = random.Random(hashlib.sha256(record_id.encode()).hexdigest())
    messages = [Message(role=role, text=text) for q, a in dialogue.turns
                for role, text in (("user", q), ("assistant", a))]
    answer = rng.choice(prompts.SEGMENT_ANSWERS).format(target=format_focus(dialogue.focus))
    return messages + [Message(role="user", text=rng.choice(prompts.SEGMENT_REQUESTS)),
                       Message(role="assistant", text=answer)]


# -- the three steps for one image ------------------------------------------------------------------
class _StepFailed(Exception):
    def __init__(self, step: str, error: BaseException) -> None:
        super().__init__(step)
        self.step, self.error = step, error


async def _step(name: str, work: Awaitable[T]) -> T:
    """Await ``work``, tagging any failure with the pipeline step it happened in."""
    try:
        return await work
    except Exception as exc:
        raise _StepFailed(name, exc) from exc


def _ask(text: str, image_part: dict) -> list[dict]:
    return [{"role": "user", "content": [{"type": "text", "text": text}, image_part]}]


def _load(path: Path) -> tuple[dict, tuple[int, int]]:
    pixels = load_image(path)
    return image_content(pixels), image_size(pixels)


async def _generate_image(path: Path, run: _Run) -> list[PristRecord]:
    """Steps 1-3 for one image; the image goes with every request, as the paper's prompts refer to it."""
    part, size = await _step("load", asyncio.to_thread(_load, path))
    elements = await _step("elements", run.client.achat_json(
        _ask(prompts.EXTRACTION_PROMPT, part), ElementList))
    element_dicts = [e.model_dump(exclude_none=True) for e in elements.elements]
    tree = await _step("reasoning_tree", run.client.achat_json(
        _ask(prompts.reasoning_prompt(element_dicts), part), ReasoningTree))
    dialogues = await _step("dialogue", run.client.achat_json(
        _ask(prompts.dialogue_prompt(element_dicts, tree.model_dump()), part), DialogueSet))
    try:
        return build_records(path.stem, _image_ref(path, run.out_dir), size, dialogues, elements,
                             tree, run.split)
    except Exception as exc:  # e.g. a record that fails validation: this image only
        raise _StepFailed("records", exc) from exc


def _image_ref(path: Path, out_dir: Path) -> str:
    """The image path relative to the dataset directory, lexically (a linked ``images/`` folder
    stays ``images/...``), or as given where there is none (another drive on Windows)."""
    try:
        return Path(os.path.relpath(os.path.abspath(path), os.path.abspath(out_dir))).as_posix()
    except ValueError:
        return str(path)


def _images_inside(images_dir: Path, out_dir: Path) -> Path:
    """The images folder as seen from inside the dataset folder, where records must name images.

    A folder outside ``out_dir`` (``--images photos/ --out gen/``) is linked in as
    ``out_dir/images`` (a symlink to it), so records read ``images/<name>`` and the dataset stays
    self-contained; an ``images`` entry already there must be that link (or that folder).
    """
    try:
        check_relative_path(_image_ref(images_dir / "x", out_dir))
        return images_dir  # already inside
    except ConfigError:
        pass
    link = out_dir / "images"
    if not link.exists() and not link.is_symlink():
        link.symlink_to(images_dir.resolve(), target_is_directory=True)
        return link
    if link.resolve() == images_dir.resolve():
        return link
    raise ConfigError(f"the images folder {images_dir} is outside --out {out_dir}, whose records must name "
                      f"images inside it, and {link} is already something else; move the images into "
                      f"{out_dir}, or pass --images {link}")


# -- output files -------------------------------------------------------------------------------------
def _append(path: Path, text: str) -> None:
    """Append ``text`` in one write and fsync it: a completed image survives a crash right after."""
    with path.open("a", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def _stem_of(record_id: str) -> str:
    return record_id.rsplit("-", 1)[0]


def _done_stems(path: Path) -> set[str]:
    """Stems of the images that already have records in ``path``."""
    stems: set[str] = set()
    if not path.is_file():
        return stems
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                stems.add(_line_stem(line, f"{path}:{number}"))
    return stems


def _line_stem(line: str, where: str) -> str:
    try:
        return _stem_of(json.loads(line)["id"])
    except (ValueError, KeyError, TypeError):
        raise ConfigError(f"{where}: not a record line; fix or remove it to resume") from None


def _repair_tail(path: Path) -> Optional[str]:
    """Cut a torn last line (a crash inside a write) and the rest of that image's records, so the
    image is redone whole; returns its stem when there was one."""
    if not path.is_file() or path.stat().st_size == 0:
        return None
    data = path.read_bytes()
    if data.endswith(b"\n"):
        return None
    lines = data[:data.rfind(b"\n") + 1].decode("utf-8").splitlines(keepends=True)
    torn = re.match(r'\{"id":\s*"(.*?)-\d+"', data[data.rfind(b"\n") + 1:].decode("utf-8", "replace"))
    stem = torn.group(1) if torn else None
    while stem and lines and _line_stem(lines[-1], str(path)) == stem:
        lines.pop()
    temporary = path.with_suffix(path.suffix + ".tmp")
    temporary.write_text("".join(lines), encoding="utf-8")
    os.replace(temporary, path)
    return stem


# -- the run ------------------------------------------------------------------------------------------
class GenerateReport(BaseModel):
    """What one run did. ``failed`` images are listed in ``failures``; a rerun retries them."""

    output: Path
    failures: Path
    images_found: int = 0
    skipped: int = 0
    completed: int = 0
    failed: int = 0
    records_written: int = 0


@dataclass
class _Run:
    client: ChatClient
    out_dir: Path
    split: str
    report: GenerateReport
    total: int
    progress: Optional[Progress]
    gate: asyncio.Semaphore
    done: int = 0
    stems_seen: set[str] = field(default_factory=set)


def _find_images(images_dir: Path) -> list[Path]:
    if not images_dir.is_dir():
        raise ConfigError(f"image folder {images_dir} does not exist or is not a folder")
    return sorted(p for p in images_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _plan(images: list[Path], done: set[str], limit: Optional[int]) -> tuple[list[Path], int]:
    """Images still to do (at most ``limit`` of them) and how many were skipped as done."""
    todo = [p for p in images if p.stem not in done]
    return (todo if limit is None else todo[:limit]), len(images) - len(todo)


async def _run_image(path: Path, run: _Run) -> None:
    async with run.gate:
        try:
            _claim_stem(path, run)
            records = await _generate_image(path, run)
        except _StepFailed as exc:
            _record_failure(path, exc.step, exc.error, run)
        else:
            _append(run.report.output, "".join(r.model_dump_json(exclude_defaults=True) + "\n" for r in records))
            run.report.completed += 1
            run.report.records_written += len(records)
    run.done += 1
    if run.progress is not None:
        run.progress(run.done, run.total, path.name)


def _claim_stem(path: Path, run: _Run) -> None:
    """Record ids are ``{stem}-{k}``: two images with one stem (a.jpg, a.png) cannot both be used."""
    if path.stem in run.stems_seen:
        raise _StepFailed("input", InputError(f"another image is also named {path.stem!r}; rename one"))
    run.stems_seen.add(path.stem)


def _record_failure(path: Path, step: str, error: BaseException, run: _Run) -> None:
    if isinstance(error, LLMError) and error.status in _FATAL_STATUSES:
        raise error
    line = {"image": str(path), "step": step, "error": run.client.redact(f"{type(error).__name__}: {error}"),
            "time": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    _append(run.report.failures, json.dumps(line, ensure_ascii=False) + "\n")
    run.report.failed += 1


async def _gather_or_cancel(coroutines: Iterable[Awaitable[None]]) -> None:
    """Like gather, but a failure cancels the siblings instead of leaving them running."""
    tasks = [asyncio.ensure_future(c) for c in coroutines]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


async def agenerate_dataset(images_dir: Union[str, os.PathLike], out_dir: Union[str, os.PathLike],
                            client: ChatClient, *, split: str = "train", concurrency: int = 4,
                            limit: Optional[int] = None, progress: Optional[Progress] = None) -> GenerateReport:
    """Async :func:`generate_dataset`, for callers already inside an event loop."""
    if concurrency < 1 or (limit is not None and limit < 0):
        raise ConfigError("concurrency must be >= 1 and limit >= 0")
    out_dir = Path(out_dir)
    output = split_path(out_dir, split)
    out_dir.mkdir(parents=True, exist_ok=True)
    _repair_tail(output)
    images = _find_images(Path(images_dir))
    if images:  # before any request is paid for: records name their images inside out_dir
        images = _find_images(_images_inside(Path(images_dir), out_dir))
    todo, skipped = _plan(images, _done_stems(output), limit)
    report = GenerateReport(output=output, failures=out_dir / FAILURES_FILE,
                            images_found=len(images), skipped=skipped)
    run = _Run(client, out_dir, split, report, len(todo), progress, asyncio.Semaphore(concurrency))
    if progress is not None:
        progress(0, len(todo), None)
    try:
        await _gather_or_cancel(_run_image(path, run) for path in todo)
    finally:
        await client.aclose()
    return report


def generate_dataset(images_dir: Union[str, os.PathLike], out_dir: Union[str, os.PathLike],
                     client: ChatClient, *, split: str = "train", concurrency: int = 4,
                     limit: Optional[int] = None, progress: Optional[Progress] = None) -> GenerateReport:
    """Generate PRIST-style dialogues for every image in ``images_dir`` into ``out_dir/{split}.jsonl``.

    ``concurrency`` bounds the images in flight; the client's ``max_concurrency`` bounds the
    requests. ``limit`` caps how many *new* images this run processes (done ones are skipped and
    not counted). ``progress(done, total, image_name)`` is called with ``(0, total, None)`` first,
    then after each image. Stop it at any time: rerunning continues where it stopped.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(agenerate_dataset(images_dir, out_dir, client, split=split,
                                             concurrency=concurrency, limit=limit, progress=progress))
    raise InputError("generate_dataset was called inside a running event loop; await agenerate_dataset instead")
