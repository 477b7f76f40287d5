"""Training metrics: a JSON Lines log, TensorBoard when installed, and a progress line."""

from __future__ import annotations

import json
import time
from pathlib import Path


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
            self.writer = _tensorboard(output / "tensorboard") if tensorboard else None
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

    def write(self, step: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        row = {"step": step, "elapsed_s": round(time.perf_counter() - self.started, 3), **values}
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")
        if self.writer is not None:
            for key, value in values.items():
                self.writer.add_scalar(key, value, step)
        if self.progress is not None:
            self.progress[0].console.print(_progress_line(row))


def _progress_line(row: dict) -> str:
    parts = [f"step {row['step']}"]
    for key, fmt in (("loss", ".4f"), ("lr", ".2e"), ("samples_per_s", ".1f"), ("val_ciou", ".3f")):
        if key in row:
            parts.append(f"{key} {row[key]:{fmt}}")
    return " | ".join(parts)


def _progress_bar(total: int, start: int):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    return bar, bar.add_task("training", total=total, completed=start)


def _tensorboard(directory: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        return None
    return SummaryWriter(str(directory))
