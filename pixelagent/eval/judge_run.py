"""Judging many dialogues into a file, resumably: one JSON line per dialogue as it finishes.

    items = [JudgeItem(key="model:prist-test-00000", dialogue=[...], focus="...", image="img.jpg"), ...]
    report = run_judge(client, items, "judge.jsonl", repeats=5)
    report.scored, report.failed, report.flagged, report.skipped_done

Each line is ``{"key", "scores": {...}}`` (a :class:`~pixelagent.eval.judge.JudgeScores`) or
``{"key", "error": "..."}``. A rerun skips the keys that have scores and retries the ones that
failed, so stopping a run (or losing the network) costs only the dialogues in flight; lines
that are not whole (a torn last line) or not ours are ignored and counted. The means come from
:func:`read_scores` + :func:`pixelagent.eval.judge.split_scores` over the keys asked for.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Optional, Union

from pydantic import BaseModel, ValidationError

from pixelagent.data.prompts import PromptPath, PromptTemplate, load_prompt
from pixelagent.errors import ConfigError, InputError
from pixelagent.eval.judge import JudgeFailure, JudgeProtocol, JudgeScores, SplitScores, ajudge_or_fail, split_scores
from pixelagent.files import read_text
from pixelagent.llm.client import ChatClient

__all__ = ["JudgeItem", "JudgeRunReport", "read_scores", "run_judge", "scores_for"]

Progress = Callable[[int, int], None]


class JudgeItem(BaseModel):
    """One dialogue to judge: a unique ``key``, its messages (``role``/``text`` dicts), its focal
    target, and the path of its image (None: judged without the image)."""

    key: str
    dialogue: list[dict]
    focus: Optional[str] = None
    image: Optional[str] = None


class JudgeRunReport(BaseModel):
    """What one run did: ``skipped_done`` keys already had scores; ``scored``/``failed`` this run;
    ``flagged``: scorings (runs) of this run with out-of-range or inconsistent scores;
    ``unreadable``: lines of the file that were ignored."""

    path: Path
    skipped_done: int = 0
    scored: int = 0
    failed: int = 0
    flagged: int = 0
    unreadable: int = 0


def read_scores(path: Union[str, os.PathLike]) -> tuple[dict[str, Union[JudgeScores, str]], int]:
    """Key → its latest scores (or error text) in the file, and how many lines were unreadable."""
    path = Path(path)
    if not path.exists():
        return {}, 0
    found: dict[str, Union[JudgeScores, str]] = {}
    unreadable = 0
    for line in read_text(path, "judge results file").splitlines():
        if not line.strip():
            continue
        entry = _parse(line)
        if entry is None:
            unreadable += 1
            continue
        key, value = entry
        if isinstance(value, JudgeScores) or not isinstance(found.get(key), JudgeScores):
            found[key] = value  # scores are never replaced by a later error
    return found, unreadable


def _parse(line: str) -> Optional[tuple[str, Union[JudgeScores, str]]]:
    try:
        entry = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if not isinstance(entry, dict) or not isinstance(entry.get("key"), str):
        return None
    if isinstance(entry.get("error"), str):
        return entry["key"], entry["error"]
    try:
        return entry["key"], JudgeScores.model_validate(entry.get("scores"))
    except (ValidationError, ValueError):
        return None


def scores_for(path: Union[str, os.PathLike], keys: Sequence[str]) -> SplitScores:
    """The split's means over ``keys`` (in order) from the file; missing or failed keys are failures."""
    found, _ = read_scores(path)
    samples, failures = [], []
    for index, key in enumerate(keys):
        value = found.get(key)
        samples.append(value if isinstance(value, JudgeScores) else None)
        if not isinstance(value, JudgeScores):
            failures.append(JudgeFailure(index=index, error=value or "not judged yet"))
    return split_scores(samples, failures)


def run_judge(client: ChatClient, items: Sequence[JudgeItem], path: Union[str, os.PathLike], *, repeats: int = 5,
              prompt: Union[PromptTemplate, PromptPath] = None, protocol: JudgeProtocol = "pixelagent",
              temperature: Optional[float] = None, concurrency: int = 4,
              progress: Optional[Progress] = None) -> JudgeRunReport:
    """Judge every item whose key has no scores in ``path`` yet, appending one line per item."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        async def main() -> JudgeRunReport:
            try:
                return await arun_judge(client, items, path, repeats=repeats, prompt=prompt, protocol=protocol,
                                        temperature=temperature, concurrency=concurrency, progress=progress)
            finally:
                await client.aclose()
        return asyncio.run(main())
    raise InputError("run_judge was called inside a running event loop; await arun_judge instead")


async def arun_judge(client: ChatClient, items: Sequence[JudgeItem], path: Union[str, os.PathLike], *,
                     repeats: int = 5, prompt: Union[PromptTemplate, PromptPath] = None,
                     protocol: JudgeProtocol = "pixelagent", temperature: Optional[float] = None,
                     concurrency: int = 4, progress: Optional[Progress] = None) -> JudgeRunReport:
    """Async :func:`run_judge`."""
    keys = [item.key for item in items]
    if len(set(keys)) != len(keys):
        raise InputError("judge items must have unique keys")
    if concurrency < 1 or repeats < 1:
        raise InputError("concurrency and repeats must be at least 1")
    template = prompt if isinstance(prompt, PromptTemplate) else load_prompt("judge", prompt)
    path = Path(path)
    found, unreadable = read_scores(path)
    todo = [item for item in items if not isinstance(found.get(item.key), JudgeScores)]
    report = JudgeRunReport(path=path, skipped_done=len(items) - len(todo), unreadable=unreadable)
    _end_torn_line(path)
    gate, done = asyncio.Semaphore(concurrency), [0]
    options = dict(prompt=template, protocol=protocol, temperature=temperature)

    async def one(item: JudgeItem) -> None:
        async with gate:
            result = await ajudge_or_fail(client, item.dialogue, item.image, repeats, focus=item.focus, **options)
        _append(path, _line(item.key, result))
        if isinstance(result, JudgeScores):
            report.scored += 1
            report.flagged += sum(bool(run.flags) for run in result.runs)
        else:
            report.failed += 1
        done[0] += 1
        if progress is not None:
            progress(done[0], len(todo))

    if progress is not None:
        progress(0, len(todo))
    await asyncio.gather(*(one(item) for item in todo))
    return report


def _line(key: str, result: Union[JudgeScores, str]) -> str:
    if isinstance(result, JudgeScores):
        return json.dumps({"key": key, "scores": result.model_dump()}, ensure_ascii=False) + "\n"
    return json.dumps({"key": key, "error": result}, ensure_ascii=False) + "\n"


def _end_torn_line(path: Path) -> None:
    """A file that does not end in a newline (killed mid-write) gets one, so the next line is whole."""
    if path.is_file() and path.stat().st_size:
        with path.open("rb") as handle:
            handle.seek(-1, os.SEEK_END)
            last = handle.read(1)
        if last != b"\n":
            _append(path, "\n")


def _append(path: Path, text: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from None
