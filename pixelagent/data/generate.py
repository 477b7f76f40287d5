"""The three-step PRIST generation pipeline (paper §3.2, Figure 7) against an OpenAI-compatible
chat endpoint, producing canonical :class:`~pixelagent.data.records.PristRecord` lines.

Per image: (1) element extraction (N elements, at least 3); K of them are drawn at random as
targets, ``2 <= K <= min(N, 4)`` (§3.2.2, seeded by the image's name and ``seed``, so a rerun
draws the same); (2) a reasoning tree with exactly K paths, one per target, no node with more
than 3 children; (3) one multi-turn dialogue per path, 4 to 8 turns (2 to 4 question/answer
pairs), ending on a focus object. We then add the closing segmentation turn (a templated
request answered with ``[OBJ]{focus}[SEG]``) and write one record per dialogue, with
``targets=[TargetAnnotation(phrase=focus)]`` and no mask: annotators draw masks later.

The constraints (:class:`Constraints`) are checked, not just asked for. A tree that breaks them
gets a repair turn (the client's JSON repair, naming the problem). Dialogues are validated one
by one: an invalid dialogue (too few or too many pairs, a question without its answer, no or an
over-long focus) is sent back in one follow-up request (prompt ``dialogue_repair``) and kept if
the rewrite is valid, else dropped alone; dialogues beyond K are dropped. The other dialogues of
the image are kept either way. The report counts each outcome and ``dropped.jsonl`` lists every
dropped dialogue with its problems.

Runs are resumable: an image's records are appended (and fsynced) together once all of them
exist, images already in the output are skipped on restart, and an image that fails (after the
client's retries and JSON repairs, or with no valid dialogue at all) is logged to
``failures.jsonl`` and retried on the next run.

The prompts are files (:mod:`pixelagent.data.prompts`); ``prompts={"dialogue": "my.txt"}``
replaces any of ``extraction``, ``reasoning_tree``, ``dialogue`` and ``dialogue_repair``.
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

__all__ = ["Constraints", "Dialogue", "DialogueSet", "Element", "ElementList", "GenerateReport", "ReasoningTree",
           "agenerate_dataset", "build_records", "choose_targets", "dialogue_problems", "generate_dataset",
           "tree_problems"]

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
FAILURES_FILE = "failures.jsonl"
DROPPED_FILE = "dropped.jsonl"
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


# -- the paper's constraints ------------------------------------------------------------------------
class Constraints(BaseModel):
    """The paper's generation constraints (§3.2.2-3.2.3, Figure 7c); the defaults are the paper's.

    ``min_k``/``max_k``: K targets per image, drawn uniformly in ``[min_k, min(N, max_k)]`` from
    the N extracted elements. ``max_children``: the most children of any node of the reasoning
    tree (root → inference nodes, node → reasoning paths). ``min_pairs``/``max_pairs``:
    question/answer pairs per dialogue before the segmentation turn (Figure 7c's "4 to 8
    turns", a turn being one utterance). ``max_focus_words``: the longest focus phrase (the
    published split's longest has 13 words). ``repair``: send invalid dialogues back once.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_k: int = Field(2, ge=1)
    max_k: int = Field(4, ge=1)
    max_children: int = Field(3, ge=1)
    min_pairs: int = Field(2, ge=1)
    max_pairs: int = Field(4, ge=1)
    max_focus_words: int = Field(20, ge=1)
    repair: bool = True

    @model_validator(mode="after")
    def _ordered(self) -> Constraints:
        if self.min_k > self.max_k or self.min_pairs > self.max_pairs:
            raise ValueError("min_k must not exceed max_k, nor min_pairs max_pairs")
        return self


def choose_targets(elements: list[dict], stem: str, seed: int, constraints: Constraints) -> list[int]:
    """Indices of the K target elements, K uniform in [min_k, min(N, max_k)], drawn from a
    generator seeded by ``seed`` and the image's name (a rerun draws the same)."""
    rng = random.Random(hashlib.sha256(f"{seed}:{stem}".encode()).hexdigest())
    high = min(len(elements), constraints.max_k)
    k = rng.randint(min(constraints.min_k, high), high)
    return sorted(rng.sample(range(len(elements)), k))


def tree_problems(tree: ReasoningTree, k: int, max_children: int) -> list[str]:
    """How ``tree`` breaks the constraints (empty when it keeps them)."""
    problems = []
    if len(tree.inference_nodes) > max_children:
        problems.append(f"the root has {len(tree.inference_nodes)} inference nodes but a node may have at most "
                        f"{max_children} children (let reasoning paths share nodes)")
    for node in tree.inference_nodes:
        if len(node.reasoning_paths) > max_children:
            problems.append(f"inference node {node.node_name!r} has {len(node.reasoning_paths)} reasoning paths, "
                            f"at most {max_children} are allowed")
    paths = len(tree.path_descriptions())
    if paths != k:
        problems.append(f"the tree has {paths} reasoning path(s); it needs exactly {k}, one per target element")
    return problems


def _tree_schema(k: int, max_children: int) -> type[ReasoningTree]:
    """ReasoningTree that also enforces the constraints, so a breaking reply gets a repair turn."""
    class ReasoningTreeK(ReasoningTree):
        @model_validator(mode="after")
        def _constraints(self) -> ReasoningTreeK:
            problems = tree_problems(self, k, max_children)
            if problems:
                raise ValueError("; ".join(problems))
            return self

    ReasoningTreeK.__name__ = ReasoningTreeK.__qualname__ = "ReasoningTree"
    return ReasoningTreeK


# -- Step 3: dialogues (Figure 7c: {"Question1": {"Q1", "A1", ..., "Focus"}, ...}) ---------------
class Dialogue(BaseModel):
    """One dialogue as generated: ``number`` is its N in "QuestionN"; ``problems`` is empty for a
    dialogue that keeps the constraints (see :func:`dialogue_problems`)."""

    number: int = 1
    turns: list[tuple[str, str]] = []
    focus: str = ""
    problems: list[str] = []


class DialogueSet(BaseModel):
    """Every "QuestionN" entry of a step-3 reply, valid or not (each is checked on its own). A
    reply with no such entry at all is invalid (the client sends a repair turn)."""

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

    def check(self, constraints: Constraints) -> DialogueSet:
        """The same dialogues with their constraint problems filled in."""
        return DialogueSet(dialogues=[d.model_copy(update={"problems": d.problems + dialogue_problems(d, constraints)})
                                      for d in self.dialogues])


def _number(key: str, prefix: str) -> int:
    """N for keys like "Question2", "question_2", "Q2"; 0 when ``key`` is not of that form."""
    match = re.fullmatch(rf"\s*{prefix}[\s_]*(\d+)\s*", str(key), re.IGNORECASE)
    return int(match.group(1)) if match else 0


def _dialogue_fields(value: Any, number: int) -> dict:
    """{"Q1", "A1", ..., "Focus"} → Dialogue fields; what is wrong goes into ``problems``."""
    if not isinstance(value, dict):
        return {"number": number, "problems": [f"Question{number} is not an object with Q1, A1, ..., Focus"]}
    questions = {_number(k, "q"): v for k, v in value.items() if _number(k, "q")}
    answers = {_number(k, "a"): v for k, v in value.items() if _number(k, "a")}
    problems = []
    unpaired = sorted(set(questions) ^ set(answers))
    if unpaired:
        problems.append(f"Question{number}: " + ", ".join(
            f"Q{n} has no A{n}" if n in questions else f"A{n} has no Q{n}" for n in unpaired))
    focus = next((v for k, v in value.items() if str(k).strip().lower() == "focus"), None)
    focus = _clean(focus) if isinstance(focus, str) else ""
    if not focus:
        problems.append(f'Question{number}: missing "Focus" (the final focus object)')
    paired = sorted(set(questions) & set(answers))
    turns = [(_clean(str(questions[n])), _clean(str(answers[n]))) for n in paired]
    if any(not q or not a for q, a in turns):
        problems.append(f"Question{number}: an empty question or answer")
    return {"number": number, "turns": turns, "focus": focus, "problems": problems}


def dialogue_problems(dialogue: Dialogue, constraints: Constraints) -> list[str]:
    """How one dialogue breaks the length and focus constraints (parsing problems aside)."""
    problems, pairs = [], len(dialogue.turns)
    if not constraints.min_pairs <= pairs <= constraints.max_pairs:
        problems.append(f"Question{dialogue.number}: {pairs} question/answer pair(s) ({2 * pairs} turns); "
                        f"{constraints.min_pairs} to {constraints.max_pairs} are required "
                        f"({2 * constraints.min_pairs} to {2 * constraints.max_pairs} turns)")
    words = len(dialogue.focus.split())
    if words > constraints.max_focus_words:
        problems.append(f"Question{dialogue.number}: the Focus has {words} words; name the target in at most "
                        f"{constraints.max_focus_words}")
    return problems


def _clean(text: str) -> str:
    """Generated text must not carry the special tokens: only the closing answer has them."""
    return " ".join(render_plain(text).split())


# -- records ---------------------------------------------------------------------------------------
def build_records(stem: str, image_ref: str, size: tuple[int, int], dialogues: Union[DialogueSet, list[Dialogue]],
                  elements: ElementList, tree: ReasoningTree, split: str) -> list[PristRecord]:
    """One record per (valid) dialogue, id ``{stem}-{N}`` for its "QuestionN", with the
    segmentation turn added; its reasoning path is the tree's N-th."""
    paths = tree.path_descriptions()
    element_dicts = [e.model_dump(exclude_none=True) for e in elements.elements]
    items = dialogues.dialogues if isinstance(dialogues, DialogueSet) else dialogues
    return [
        PristRecord(id=f"{stem}-{d.number}", image=image_ref, image_size=size, split=split,
                    messages=_messages(d, f"{stem}-{d.number}"), focus=d.focus,
                    targets=[TargetAnnotation(phrase=d.focus)], source=RECORD_SOURCE,
                    elements=element_dicts, reasoning_path=paths[d.number - 1] if d.number <= len(paths) else [])
        for d in items
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


@dataclass
class _Outcome:
    """What step 3 gave for one image: the dialogues kept and what happened to the others."""

    kept: list[Dialogue]
    k: int = 0
    repaired: int = 0
    dropped: list[Dialogue] = field(default_factory=list)
    beyond_k: list[Dialogue] = field(default_factory=list)


async def _generate_image(path: Path, run: _Run) -> tuple[list[PristRecord], _Outcome]:
    """Steps 1-3 for one image; the image goes with every request, as the paper's prompts refer to it."""
    part, size = await _step("load", asyncio.to_thread(_load, path))
    elements = await _step("elements", run.client.achat_json(
        _ask(run.prompts["extraction"].render(), part), ElementList))
    element_dicts = [e.model_dump(exclude_none=True) for e in elements.elements]
    chosen = choose_targets(element_dicts, path.stem, run.seed, run.constraints)
    targets = [element_dicts[i] for i in chosen]
    k = len(targets)
    tree = await _step("reasoning_tree", run.client.achat_json(
        _ask(prompts.reasoning_prompt(element_dicts, targets, run.prompts["reasoning_tree"]), part),
        _tree_schema(k, run.constraints.max_children)))
    bounds = dict(min_pairs=run.constraints.min_pairs, max_pairs=run.constraints.max_pairs)
    request = _ask(prompts.dialogue_prompt(element_dicts, tree.model_dump(by_alias=False), k, targets=targets,
                                           template=run.prompts["dialogue"], **bounds), part)
    reply = await _step("dialogue", run.client.achat_json(request, DialogueSet))
    outcome = await _step("dialogue", _validated(reply.check(run.constraints), request, k, run))
    if not outcome.kept:
        problems = "; ".join(p for d in outcome.dropped for p in d.problems) or "none returned"
        raise _StepFailed("dialogue", InputError(f"no dialogue kept the constraints ({_short(problems, 400)})"))
    try:
        records = build_records(path.stem, _image_ref(path, run.out_dir), size, outcome.kept, elements, tree, run.split)
    except Exception as exc:  # e.g. a record that fails validation: this image only
        raise _StepFailed("records", exc) from exc
    return records, outcome


async def _validated(dialogues: DialogueSet, request: list[dict], k: int, run: _Run) -> _Outcome:
    """Keep the first K dialogues; send the invalid ones back once; drop what is still invalid."""
    ordered = sorted(dialogues.dialogues, key=lambda d: d.number)
    first, beyond = ordered[:k], ordered[k:]
    invalid = [d for d in first if d.problems]
    fixed: dict[int, Dialogue] = {}
    if invalid and run.constraints.repair:
        fixed = await _repair(invalid, request, dialogues, run)
    kept, dropped = [], []
    for dialogue in first:
        if not dialogue.problems:
            kept.append(dialogue)
        elif dialogue.number in fixed:
            kept.append(fixed[dialogue.number])
        else:
            dropped.append(dialogue)
    return _Outcome(kept=kept, k=k, repaired=len(fixed), dropped=dropped, beyond_k=beyond)


async def _repair(invalid: list[Dialogue], request: list[dict], reply: DialogueSet, run: _Run) -> dict[int, Dialogue]:
    """One follow-up request quoting each invalid dialogue's problems; the valid rewrites by number."""
    bounds = run.constraints
    text = run.prompts["dialogue_repair"].render(
        problems="\n".join(f"- {p}" for d in invalid for p in d.problems), min_pairs=bounds.min_pairs,
        max_pairs=bounds.max_pairs, min_turns=2 * bounds.min_pairs, max_turns=2 * bounds.max_pairs)
    earlier = json.dumps({f"Question{d.number}": _as_entry(d) for d in reply.dialogues}, ensure_ascii=False)
    messages = [*request, {"role": "assistant", "content": earlier}, {"role": "user", "content": text}]
    try:
        rewrite = (await run.client.achat_json(messages, DialogueSet)).check(bounds)
    except LLMError as exc:
        if exc.status in _FATAL_STATUSES:
            raise
        return {}  # the repair failed: the invalid dialogues are dropped, the valid ones kept
    wanted = {d.number for d in invalid}
    return {d.number: d for d in rewrite.dialogues if d.number in wanted and not d.problems}


def _as_entry(dialogue: Dialogue) -> dict:
    entry: dict[str, str] = {}
    for n, (question, answer) in enumerate(dialogue.turns, start=1):
        entry[f"Q{n}"], entry[f"A{n}"] = question, answer
    return {**entry, "Focus": dialogue.focus}


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


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
    """What one run did. ``failed`` images are listed in ``failures``; a rerun retries them.

    Dialogues of the completed images: ``dialogues_kept`` were written (``dialogues_repaired``
    of them after the follow-up request), ``dialogues_dropped`` broke the constraints even then,
    ``dialogues_beyond_k`` were more than the image's K; the dropped ones are listed in
    ``dropped``. ``k_counts`` counts the images by the K drawn for them.
    """

    output: Path
    failures: Path
    dropped: Path
    images_found: int = 0
    skipped: int = 0
    completed: int = 0
    failed: int = 0
    records_written: int = 0
    dialogues_kept: int = 0
    dialogues_repaired: int = 0
    dialogues_dropped: int = 0
    dialogues_beyond_k: int = 0
    k_counts: dict[str, int] = {}
    prompts: dict[str, str] = {}


@dataclass
class _Run:
    client: ChatClient
    out_dir: Path
    split: str
    report: GenerateReport
    total: int
    progress: Optional[Progress]
    gate: asyncio.Semaphore
    prompts: dict[str, prompts.PromptTemplate]
    constraints: Constraints
    seed: int = 0
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
            records, outcome = await _generate_image(path, run)
        except _StepFailed as exc:
            _record_failure(path, exc.step, exc.error, run)
        else:
            _append(run.report.output, "".join(r.model_dump_json(exclude_defaults=True) + "\n" for r in records))
            _count(path, outcome, run)
            run.report.completed += 1
            run.report.records_written += len(records)
    run.done += 1
    if run.progress is not None:
        run.progress(run.done, run.total, path.name)


def _count(path: Path, outcome: _Outcome, run: _Run) -> None:
    report = run.report
    report.k_counts[str(outcome.k)] = report.k_counts.get(str(outcome.k), 0) + 1
    report.dialogues_kept += len(outcome.kept)
    report.dialogues_repaired += outcome.repaired
    report.dialogues_dropped += len(outcome.dropped)
    report.dialogues_beyond_k += len(outcome.beyond_k)
    lines = [{"image": str(path), "dialogue": d.number, "why": why, "problems": d.problems}
             for why, items in (("invalid", outcome.dropped), ("beyond K", outcome.beyond_k)) for d in items]
    if lines:
        _append(report.dropped, "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines))


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


PIPELINE_PROMPTS = ("extraction", "reasoning_tree", "dialogue", "dialogue_repair")


async def agenerate_dataset(images_dir: Union[str, os.PathLike], out_dir: Union[str, os.PathLike],
                            client: ChatClient, *, split: str = "train", concurrency: int = 4,
                            limit: Optional[int] = None, progress: Optional[Progress] = None,
                            prompt_files: Optional[dict[str, Union[str, os.PathLike]]] = None,
                            constraints: Optional[Constraints] = None, seed: int = 0) -> GenerateReport:
    """Async :func:`generate_dataset`, for callers already inside an event loop."""
    if concurrency < 1 or (limit is not None and limit < 0):
        raise ConfigError("concurrency must be >= 1 and limit >= 0")
    templates = prompts.read_prompts(prompt_files, PIPELINE_PROMPTS)  # checked before anything is done
    out_dir = Path(out_dir)
    output = split_path(out_dir, split)
    out_dir.mkdir(parents=True, exist_ok=True)
    _repair_tail(output)
    images = _find_images(Path(images_dir))
    if images:  # before any request is paid for: records name their images inside out_dir
        images = _find_images(_images_inside(Path(images_dir), out_dir))
    todo, skipped = _plan(images, _done_stems(output), limit)
    report = GenerateReport(output=output, failures=out_dir / FAILURES_FILE, dropped=out_dir / DROPPED_FILE,
                            images_found=len(images), skipped=skipped,
                            prompts={name: t.source for name, t in templates.items()})
    run = _Run(client, out_dir, split, report, len(todo), progress, asyncio.Semaphore(concurrency),
               templates, constraints or Constraints(), seed)
    if progress is not None:
        progress(0, len(todo), None)
    try:
        await _gather_or_cancel(_run_image(path, run) for path in todo)
    finally:
        await client.aclose()
    return report


def generate_dataset(images_dir: Union[str, os.PathLike], out_dir: Union[str, os.PathLike],
                     client: ChatClient, *, split: str = "train", concurrency: int = 4,
                     limit: Optional[int] = None, progress: Optional[Progress] = None,
                     prompt_files: Optional[dict[str, Union[str, os.PathLike]]] = None,
                     constraints: Optional[Constraints] = None, seed: int = 0) -> GenerateReport:
    """Generate PRIST-style dialogues for every image in ``images_dir`` into ``out_dir/{split}.jsonl``.

    ``concurrency`` bounds the images in flight; the client's ``max_concurrency`` bounds the
    requests. ``limit`` caps how many *new* images this run processes (done ones are skipped and
    not counted). ``progress(done, total, image_name)`` is called with ``(0, total, None)`` first,
    then after each image. Stop it at any time: rerunning continues where it stopped.
    ``prompt_files`` maps prompt names (``extraction``, ``reasoning_tree``, ``dialogue``,
    ``dialogue_repair``) to the user's own files; ``constraints`` overrides the paper's
    (:class:`Constraints`); ``seed`` varies the draw of K and of the targets.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(agenerate_dataset(images_dir, out_dir, client, split=split, concurrency=concurrency,
                                             limit=limit, progress=progress, prompt_files=prompt_files,
                                             constraints=constraints, seed=seed))
    raise InputError("generate_dataset was called inside a running event loop; await agenerate_dataset instead")
