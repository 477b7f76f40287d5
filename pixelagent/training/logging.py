"""Training metrics: a JSON Lines log, TensorBoard when installed, and a progress line."""

from __future__ import annotations

import json
import time
from pathlib import Path


class MetricsLog:
    """Appends ``{"step": ..., ...}`` rows to ``metrics.jsonl`` (main rank only)."""

    def __init__(self, output: Path, enabled: bool, tensorboard: bool) -> None:
        self.enabled = enabled
        self.path = output / "metrics.jsonl"
        self.started = time.perf_counter()
        self.writer = None
        if enabled:
            output.mkdir(parents=True, exist_ok=True)
            self.writer = _tensorboard(output / "tensorboard") if tensorboard else None

    def __enter__(self) -> MetricsLog:
        return self

    def __exit__(self, *exc) -> None:
        if self.writer is not None:
            self.writer.close()

    def write(self, step: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        row = {"step": step, "elapsed_s": round(time.perf_counter() - self.started, 3), **values}
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")
        if self.writer is not None:
            for key, value in values.items():
                self.writer.add_scalar(key, value, step)
        print(_progress_line(row), flush=True)


def _progress_line(row: dict) -> str:
    parts = [f"step {row['step']}"]
    for key, fmt in (("loss", ".4f"), ("lr", ".2e"), ("samples_per_s", ".1f"), ("val_ciou", ".3f")):
        if key in row:
            parts.append(f"{key} {row[key]:{fmt}}")
    return " | ".join(parts)


def _tensorboard(directory: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        return None
    return SummaryWriter(str(directory))
