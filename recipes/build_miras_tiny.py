"""Build the shipped miras-tiny from nothing: data, stage 1, stage 2, evaluation, export.

    pixelagent recipe build-miras-tiny [--work runs/build-miras-tiny] [--procs 2]
        [--ship-to plugins/pixelagent_miras/weights/miras-tiny] [--eval-limit N] [key=value ...]

Steps (each is skipped when its output is already there, so an interrupted build resumes):

1. ``data``: three PRIST-Synth sets under WORK/data: single-turn referring requests (stage 1,
   seed 1), PRIST-style reasoning dialogues (stage 2 and evaluation, seed 0) and narrowing
   dialogues with a mask every turn (stage 2, seed 2); 6000 dialogues each at 256 px.
2. ``sam``: stage 0, ``pretrain-sam-tiny`` on the three sets' training splits (box and point
   prompts; SAM-tiny's stand-in for Meta's SAM) into WORK/sam/sam_tiny.pth.
3. ``stage1``: ``recipes/configs/miras_tiny/stage1.yaml`` from that SAM; ``stage2``: ``.../stage2.yaml``
   from all stage-1 weights. With ``--procs 2`` each stage runs under torchrun (gloo, one thread per
   process), which on a 2-core CPU trains ~1.4x faster than one process with two threads.
4. ``eval``: ``eval-prist`` on the reasoning set's test split (WORK/eval).
5. ``ship``: the stage-2 model in float16 (``config.json``, ``model.safetensors``) and a model
   card with the data, steps, wall time, metrics and this command, into ``--ship-to``.

Extra ``key=value`` arguments override both stage configs (e.g. ``optim.max_steps=200`` for a
quick check); ``--sam-steps`` sets stage 0's length. Timings and step outcomes are kept in WORK/build.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from pixelagent.arguments import positive_int

HERE = Path(__file__).resolve().parent
SAM_WEIGHTS = "sam_tiny.pth"
SHIPPED = HERE.parent / "plugins" / "pixelagent_miras" / "weights" / "miras-tiny"
DATASETS = {  # name: synth options
    "prist-synth-referring": ["--n", "6000", "--turns", "1", "--seed", "1"],
    "prist-synth": ["--n", "6000", "--seed", "0"],
    "prist-synth-narrowing": ["--n", "6000", "--style", "narrowing", "--seed", "2"],
}
COMMAND = "pixelagent recipe build-miras-tiny --procs 2"
SAM_STEPS = 1500


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="pixelagent recipe build-miras-tiny", description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("runs/build-miras-tiny"))
    parser.add_argument("--procs", type=positive_int, default=1, help="training processes (torchrun when > 1)")
    parser.add_argument("--ship-to", type=Path, default=SHIPPED)
    parser.add_argument("--eval-limit", type=positive_int, default=200, help="evaluate the first N test dialogues "
                        "(the split has 600; a larger N takes them all)")
    parser.add_argument("--sam-steps", type=positive_int, default=SAM_STEPS, help="stage-0 steps (SAM pretraining)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides for both training stages")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    log = BuildLog(work / "build.json")
    make_data(work, log)
    pretrain_sam(work, args.sam_steps, log)
    for stage, init in (("stage1", None), ("stage2", work / "stage1" / "final")):
        train_stage(stage, work, init, args.procs, args.overrides, log)
    evaluate(work, args.eval_limit, log)
    ship(work, args.ship_to, log)
    print(f"shipped miras-tiny: {args.ship_to}")
    return 0


class BuildLog:
    """WORK/build.json: per step its wall time and outcome, kept across resumed builds."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}

    def record(self, step: str, **values: Any) -> None:
        self.data[step] = {**self.data.get(step, {}), **values}
        self.path.write_text(json.dumps(self.data, indent=2) + "\n")


def make_data(work: Path, log: BuildLog) -> None:
    for name, options in DATASETS.items():
        out = work / "data" / name
        if (out / "test.jsonl").is_file():
            continue
        started = time.perf_counter()
        run([sys.executable, "-m", "pixelagent", "data", "synth", "--out", str(out), "--overwrite", *options])
        log.record(f"data/{name}", seconds=round(time.perf_counter() - started, 1), options=options)


def pretrain_sam(work: Path, steps: int, log: BuildLog) -> None:
    """Stage 0: SAM-tiny pretrained on every mask of the three sets' training splits."""
    out = work / "sam"
    if (out / "summary.json").is_file():
        return
    started = time.perf_counter()
    data = [str(work / "data" / name) for name in ("prist-synth-narrowing", "prist-synth-referring", "prist-synth")]
    arguments = ["--data", *data, "--out", str(out), "--steps", str(steps)]
    if (out / "state.pt").is_file():
        arguments.append("--resume")
    run([sys.executable, str(HERE / "pretrain_sam_tiny.py"), *arguments])
    summary = json.loads((out / "summary.json").read_text())
    log.record("sam", seconds=round(time.perf_counter() - started, 1), steps=steps,
               val_iou_boxes=summary.get("val_iou_boxes"), val_iou_points=summary.get("val_iou_points"))


def stage_overrides(stage: str, work: Path, init: Path | None, extra: list[str]) -> list[str]:
    data = work / "data"
    paths = {"stage1": {"referring": "prist-synth-referring"},
             "stage2": {"prist": "prist-synth", "narrowing": "prist-synth-narrowing"}}[stage]
    overrides = [f"output_dir={work / stage}"]
    if stage == "stage1":
        overrides.append(f"preset_overrides.mask_decoder.settings.checkpoint={work / 'sam' / SAM_WEIGHTS}")
    overrides += [f"data.sources.{source}.dataset_dir={data / name}" for source, name in paths.items()]
    overrides.append(f"data.val.dataset_dir={data / next(iter(paths.values()))}")
    if init is not None:
        overrides.append(f"init_from={init}")
    return overrides + list(extra)


def train_stage(stage: str, work: Path, init: Path | None, procs: int, extra: list[str], log: BuildLog) -> None:
    if (work / stage / "final" / "model.safetensors").is_file():
        return
    script = HERE / f"train_{stage}.py"
    arguments = ["--config", f"miras_tiny/{stage}", *stage_overrides(stage, work, init, extra)]
    if (work / stage / "checkpoints").is_dir():
        arguments.append("--resume")
    started = time.perf_counter()
    if procs > 1:
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(procs),
             str(script), *arguments], env=env)
    else:
        run([sys.executable, str(script), *arguments])
    log.record(stage, seconds=round(time.perf_counter() - started, 1), procs=procs, overrides=extra,
               metrics=last_metrics(work / stage / "metrics.jsonl"))


def last_metrics(path: Path) -> dict[str, Any]:
    """The last training line and the last validation line of a run's metrics.jsonl."""
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
    train = [line for line in lines if "loss" in line]
    val = [line for line in lines if "val_ciou" in line]
    return {"last": train[-1] if train else None, "val": val[-1] if val else None}


def evaluate(work: Path, limit: int | None, log: BuildLog) -> None:
    out = work / "eval"
    if (out / "metrics.json").is_file():
        return
    started = time.perf_counter()
    command = [sys.executable, str(HERE / "eval_prist.py"), "--preset", str(work / "stage2" / "final"),
               "--data", str(work / "data" / "prist-synth"), "--split", "test", "--out", str(out)]
    run(command + (["--limit", str(limit)] if limit else []))  # None or 0: the whole split
    log.record("eval", seconds=round(time.perf_counter() - started, 1), limit=limit)


def ship(work: Path, target: Path, log: BuildLog) -> None:
    """Write the float16 model and its card into ``target`` (replacing what was there)."""
    from pixelagent.nn.model import CONFIG_FILE, WEIGHTS_FILE, read_preset
    from safetensors.torch import load_file, save_file

    final = work / "stage2" / "final"
    read_preset(final)  # a clear error if stage 2 did not finish
    state = load_file(str(final / WEIGHTS_FILE))
    half = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in state.items()}
    target.mkdir(parents=True, exist_ok=True)
    save_file(half, str(target / WEIGHTS_FILE), metadata={"format": "pt", "dtype": "float16"})
    config = json.loads((final / CONFIG_FILE).read_text())
    config["preset"]["weights"] = None  # a path on the build machine; loading points it at the folder
    (target / CONFIG_FILE).write_text(json.dumps(config, indent=2))
    log.record("ship", target=str(target), megabytes=round((target / WEIGHTS_FILE).stat().st_size / 2**20, 2))
    metrics = json.loads((work / "eval" / "metrics.json").read_text())
    (target / "MODEL_CARD.md").write_text(model_card(log.data, metrics, sum(v.numel() for v in state.values())))


def model_card(build: dict[str, Any], metrics: dict[str, Any], parameters: int) -> str:
    seg = metrics.get("segmentation", {})
    overall = seg.get("overall", {})
    rows = ["| split | cIoU | gIoU | F1 |", "|---|---|---|---|"]
    by = seg.get("by_granularity", {})
    for name, bucket in [("overall", overall), *((g, by[g]) for g in ("coarse", "medium", "fine") if g in by)]:
        rows.append(f"| {name} | {_f(bucket.get('ciou'))} | {_f(bucket.get('giou'))} | {_f(bucket.get('f1'))} |")
    fine = metrics.get("fine_vs_parent", {})
    sam = build.get("sam", {})
    stage_lines = [f"- stage 0 (SAM-tiny, `pretrain-sam-tiny`): {sam.get('steps', '?')} steps of 8 images, "
                   f"{_minutes(sam.get('seconds'))}; validation mean IoU {_f(sam.get('val_iou_boxes'))} from a box, "
                   f"{_f(sam.get('val_iou_points'))} from one point"]
    for stage in ("stage1", "stage2"):
        info = build.get(stage, {})
        last = (info.get("metrics") or {}).get("last") or {}
        stage_lines.append(f"- {stage}: {last.get('step', '?')} steps of 8 samples, "
                           f"{_minutes(info.get('seconds'))} on {info.get('procs', 1)} process(es)")
    response = metrics.get("response", {})
    return f"""# miras-tiny

The MIRAS architecture (dual visual encoder with cross-attention fusion, LLaVA-NeXT-style LLM,
semantic region alignment, SAM mask decoder) at a CPU size, trained from random weights by
pixelagent's own recipes on PRIST-Synth. It is the default model of `Agent()` when no GPU
and MIRAS weights are configured. It understands PRIST-Synth scenes (flat-coloured bottles,
mugs, signs, books, buses, coins with parts and printed words) and little else: it is a
demonstration of the whole system, not a general segmenter.

- Parameters: {parameters / 1e6:.2f} M, stored in float16 ({_size(build)}).
- Reproduce: `{COMMAND}` (from the repository root; writes runs/build-miras-tiny and this folder).

## Data

PRIST-Synth (`pixelagent data synth`), 256-pixel scenes, 6000 dialogues per set, split 80/10/10 by image:
single-turn referring requests (seed 1) for stage 1; PRIST-style reasoning dialogues (seed 0)
and narrowing dialogues with a mask every turn (seed 2), mixed 1:1, for stage 2. The demo
scenes use seed 2026, which no training set uses.

## Training

Stage 0 pretrains SAM-tiny on every mask of the three sets' training splits, prompted by a box
or a point, as Meta's SAM was on SA-1B; its image encoder then stays frozen. Configs
`recipes/configs/miras_tiny/stage1.yaml` and `stage2.yaml` (every other weight trains, the DICE
term outweighs BCE; see their headers for why).

Three additions for this size, none of them in the paper, let the decoder find the named
instance among look-alikes (the blue mug, not the yellow one): SAM-tiny's prompt gate (each
`[SEG]` prompt also gates the image embedding as a dense prompt); an auxiliary training-only
loss (`loss.phrase`) that makes each `[SEG]` prompt predict the words of its phrase, so the
prompt carries the colour; and `phrase_noise`, which swaps position words inside
`[OBJ]…[SEG]` during training (and leaves them out of the text loss), so the mask follows colour
and kind rather than the model's own position words, which are mostly wrong at this size.
Stage 2 also doubles the text term and passes a tenth of the mask gradient into the LLM
(`loss.llm_mask_grad: 0.1`), which keeps the 64-d LLM's answers intact.

{chr(10).join(stage_lines)}

## Evaluation (PRIST-Synth test split, real multi-turn generation)

`pixelagent recipe eval-prist` on {metrics.get('samples', '?')} dialogues; no-[SEG] rate {_f(metrics.get('no_seg_rate'))}.

{chr(10).join(rows)}

Fine-granularity targets: mean IoU with the true target {_f(fine.get('target_iou'))}, with its parent
object {_f(fine.get('parent_iou'))}.

Response metrics of the reasoning turns (0-100 scales, as the paper's Table 3):
{', '.join(f'{k} {v:.1f}' for k, v in sorted(response.items()) if isinstance(v, float))}.
"""


def _f(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) else "n/a"


def _minutes(seconds: Any) -> str:
    return f"{seconds / 60:.1f} min" if isinstance(seconds, (int, float)) else "? min"


def _size(build: dict[str, Any]) -> str:
    megabytes = build.get("ship", {}).get("megabytes")
    return f"{megabytes} MB" if megabytes else "see model.safetensors"


def run(command: list[str], env: dict[str, str] | None = None) -> None:
    print("+ " + " ".join(command), flush=True)
    result = subprocess.run(command, env=env)
    if result.returncode:
        raise SystemExit(f"step failed ({result.returncode}): {' '.join(command)}")


if __name__ == "__main__":
    sys.exit(main())
