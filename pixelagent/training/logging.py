"""Training metrics: a JSON Lines log, TensorBoard when installed, and a progress line.

A resumed run redoes the steps after its checkpoint, so on start the log drops the rows (and
TensorBoard the events) of later steps: each step appears once, with the values of the run
that produced the final weights.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from pixelagent.errors import CheckpointError
from pixelagent.nn.model import DISK_FULL


class MetricsLog:
    """Appends ``{"step": ..., ...}`` rows to ``metrics.jsonl`` and drives a progress bar
    showing loss, lr and samples/s (main rank only)."""

    def __init__(self, output: Path, enabled: bool, tensorboard: bool, total_steps: int = 0,
                 start_step: int = 0) -> None:
        self.enabled = enabled
        self.path = output / "metrics.jsonl"
        self.started = time.perf_counter()
        self.writer = None
        self.progress = None
        if enabled:
            output.mkdir(parents=True, exist_ok=True)
            self._drop_rows_after(start_step)
            # purge_step: events from step start_step + 1 on (a previous run's) are discarded
            self.writer = _tensorboard(output / "tensorboard", start_step + 1) if tensorboard else None
            self.progress = _progress_bar(total_steps, start_step)

    def __enter__(self) -> MetricsLog:
        if self.progress is not None:
            self.progress[0].start()
        return self

    def __exit__(self, *exc) -> None:
        if self.progress is not None:
            self.progress[0].stop()
        if self.writer is not None:
            self.writer.close()

    def step(self, step: int, values: dict[str, float]) -> None:
        """Move the bar to ``step`` and show the latest loss, lr and samples/s."""
        if self.progress is not None:
            bar, task = self.progress
            bar.update(task, completed=step, description=_progress_line({"step": step, **values}))

    def _drop_rows_after(self, step: int) -> None:
        """Rewrite metrics.jsonl (atomically) without the rows of steps after ``step``.

        A line that does not parse (the last one, cut by a kill) goes too.
        """
        if not self.path.is_file():
            return
        try:
            lines = self.path.read_text(encoding="utf-8", errors="replace").splitlines()
            kept = [line for line in lines if (row_step := _row_step(line)) is not None and row_step <= step]
            if len(kept) == len(lines):
                return
            partial = self.path.with_name(self.path.name + ".partial")
            try:
                with partial.open("w", encoding="utf-8") as handle:
                    handle.write("".join(line + "\n" for line in kept))
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(partial, self.path)
            finally:
                partial.unlink(missing_ok=True)
        except OSError as exc:
            raise _log_failure(self.path, exc, "rewrite") from None

    def write(self, step: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        row = {"step": step, "elapsed_s": round(time.perf_counter() - self.started, 3), **values}
        try:
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(row) + "\n")
        except OSError as exc:
            raise _log_failure(self.path, exc, "append to") from None
        if self.writer is not None:
            for key, value in values.items():
                self.writer.add_scalar(key, value, step)
        if self.progress is not None:
            self.progress[0].console.print(_progress_line(row))


def _row_step(line: str) -> int | None:
    try:
        row = json.loads(line)
    except ValueError:
        return None
    step = row.get("step") if isinstance(row, dict) else None
    return step if isinstance(step, int) else None


def _log_failure(path: Path, exc: OSError, doing: str) -> CheckpointError:
    if exc.errno in DISK_FULL:
        fix = "free space on that disk or set output_dir to another disk"
        what = f"disk full ({exc.strerror})"
    else:
        fix = "check that the folder is writable"
        what = exc.strerror or str(exc)
    return CheckpointError(f"cannot {doing} {path}: {what}; the checkpoints are kept: {fix}, then rerun "
                           "with --resume")


def _progress_line(row: dict) -> str:
    parts = [f"step {row['step']}"]
    for key, fmt in (("loss", ".4f"), ("lr", ".2e"), ("samples_per_s", ".1f"), ("val_ciou", ".3f")):
        if key in row:
            parts.append(f"{key} {row[key]:{fmt}}")
    return " | ".join(parts)


def _progress_bar(total: int, start: int):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from rich.console import Console

    # stderr: stdout carries only a command's output (a recipe's --json, say)
    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                   console=Console(stderr=True))
    return bar, bar.add_task("training", total=total, completed=start)


def _tensorboard(directory: Path, purge_step: int):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        return None
    return SummaryWriter(str(directory), purge_step=purge_step)
