"""The paper's Table 6 in miniature: miras-tiny against its ablations, all trained the same way.

    pixelagent recipe ablate-miras-tiny [--work runs/ablate-miras-tiny] [--data runs/build-miras-tiny/data]
        [--procs 2] [--jobs 1] [--steps1 1500] [--steps2 2000] [--eval-limit 200] [--variants a,b,...]
        [--seeds 0] [--shipped-seeds 0,1] [--checkpoint-every 250]

Variants (each trained with ``miras_tiny/stage1`` then ``miras_tiny/stage2``, the same data,
step counts and seeds, and evaluated with ``eval-prist`` on the PRIST-Synth test split):

- ``miras-tiny``: the full model;
- ``no-sra``: semantic region alignment replaced by LISA's ``[SEG]`` projection;
- ``no-dual``: the dual encoder replaced by the CLIP encoder alone (no ConvNeXt, no fusion);
- ``lisa-tiny``: the LISA architecture (CLIP + ``[SEG]`` projection).

The default budget is the shipped model's (stage 1 1500 + stage 2 2000 steps of 8, evaluated on
the first 200 test dialogues), so that the variants are compared at equal and sufficient
training. Each variant trains once per seed of ``--seeds`` (the config's ``seed``: weight
initialisation and data order), the shipped variant once per seed of ``--shipped-seeds`` too,
so its row shows the spread between seeds.

Every (variant, seed) is its own resumable run in WORK/<variant>/seed-<s>/{stage1,stage2,eval}:
checkpoints are written every ``--checkpoint-every`` steps, a rerun of the same command
continues a stopped stage from its newest intact checkpoint (``--resume``), continues a stopped
evaluation where it stopped, and skips what is finished. The data and the stage-0 SAM-tiny come
from ``build-miras-tiny`` (its ``data`` and ``sam`` steps run first if they are missing) and are
shared by every run. ``--jobs J`` runs J of the (variant, seed) runs at once, each on ``--procs``
processes: at the shipped budget one run took 24-30 minutes on 2 cores (2 processes, the SAM-tiny
embeddings cached), and the whole default (data, stage 0, five runs) 2 h 41 min there; on a
machine with 10 cores ``--jobs 5`` runs the five at once.
A run that fails stops only itself; the others go on, and the command then names it and exits
with an error (rerun to continue it). Writes WORK/ablation.md and WORK/ablation.json: per variant the mean over
its seeds ± the sample standard deviation, and whether the paper's order holds.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from pixelagent.arguments import positive_int

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import build_miras_tiny as build  # noqa: E402  (a sibling recipe, not a library module)

VARIANTS: dict[str, list[str]] = {
    "miras-tiny": [],
    "no-sra": ["preset_overrides.alignment=lisa-projection"],
    "no-dual": ["preset_overrides.visual_encoder={name: clip, settings: {tiny: true, train_backbone: true}}"],
    "lisa-tiny": ["preset=lisa-tiny"],  # the configs' train_backbone applies to its CLIP encoder
}
SHIPPED = "miras-tiny"
#: The paper's Table 6 order (refCOCOg val and test cIoU): the full model, then without semantic
#: region alignment, then without the dual encoder; LISA (neither) is not in the table and comes last.
PAPER_ORDER = ("miras-tiny", "no-sra", "no-dual", "lisa-tiny")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="pixelagent recipe ablate-miras-tiny", description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("runs/ablate-miras-tiny"))
    parser.add_argument("--data", type=Path, default=Path("runs/build-miras-tiny/data"),
                        help="the data folder of build-miras-tiny (made if missing)")
    parser.add_argument("--procs", type=positive_int, default=1, help="training processes per run (torchrun)")
    parser.add_argument("--jobs", type=positive_int, default=1,
                        help="runs at once (each with --procs processes); use jobs x procs <= your cores")
    parser.add_argument("--steps1", type=positive_int, default=1500, help="stage-1 optimiser steps per run (shipped: 1500)")
    parser.add_argument("--steps2", type=positive_int, default=2000, help="stage-2 optimiser steps per run (shipped: 2000)")
    parser.add_argument("--eval-limit", type=positive_int, default=200,
                        help="evaluate the first N test dialogues (the split has 600; a larger N takes them all)")
    parser.add_argument("--sam-steps", type=positive_int, default=build.SAM_STEPS,
                        help="stage-0 steps, when the build's SAM-tiny is not there yet")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--seeds", default="0", help="comma-separated training seeds of every variant")
    parser.add_argument("--shipped-seeds", default="0,1", help=f"the seeds of {SHIPPED} (at least two: its spread)")
    parser.add_argument("--checkpoint-every", type=positive_int, default=250,
                        help="steps between checkpoints, so a stopped run resumes near where it stopped")
    parser.add_argument("--card", type=Path, default=None,
                        help="a model card whose '## Ablation' section gets the table (e.g. the shipped MODEL_CARD.md)")
    return parser.parse_args(argv)


def seeds_of(name: str, args: argparse.Namespace) -> list[int]:
    """The seeds ``name`` trains with: ``--seeds``, plus ``--shipped-seeds`` for the shipped variant."""
    seeds = _ints(args.seeds, "--seeds") + (_ints(args.shipped_seeds, "--shipped-seeds") if name == SHIPPED else [])
    return list(dict.fromkeys(seeds))


def run_order(names: list[str], args: argparse.Namespace) -> list[tuple[str, int]]:
    """Every (variant, seed), the first seed of each variant before any second one, so that an
    ablation stopped part-way already has a row for every variant it got to."""
    seeds = {name: seeds_of(name, args) for name in names}
    depth = max(len(s) for s in seeds.values())
    return [(name, seeds[name][i]) for i in range(depth) for name in names if i < len(seeds[name])]


def _ints(text: str, flag: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise SystemExit(f"{flag} must be comma-separated integers like 0,1; got {text!r}") from None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variant(s) {unknown}; choose from {', '.join(VARIANTS)}")
    data = args.data.resolve()
    shared = build.BuildLog(data.parent / "build.json")
    build.make_data(data.parent, shared)
    build.pretrain_sam(data.parent, args.sam_steps, shared)  # stage 0, shared by every variant
    rows = run_all(run_order(names, args), data, args)
    table = ablation_markdown(rows, args)
    args.work.mkdir(parents=True, exist_ok=True)
    (args.work / "ablation.md").write_text(table)
    (args.work / "ablation.json").write_text(json.dumps(rows, indent=2) + "\n")
    if args.card is not None:
        update_card(args.card, table, "pixelagent recipe ablate-miras-tiny " + " ".join(argv or sys.argv[1:]))
    print(table)
    return 0


def run_all(runs: list[tuple[str, int]], data: Path, args: argparse.Namespace) -> dict:
    """Every (variant, seed) of ``runs``, ``args.jobs`` at once → {variant: {"seeds": {seed: result}}}.

    Raises SystemExit naming the runs that failed, after every other run has finished (what the
    failed ones did is kept: a rerun continues them)."""
    from concurrent.futures import ThreadPoolExecutor

    # each run is subprocesses (torchrun, eval-prist): threads only wait for them
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = {run: pool.submit(run_variant, *run, data, args) for run in runs}
    failed = [f"{name} seed {seed} ({future.exception()})" for (name, seed), future in futures.items()
              if future.exception() is not None]
    if failed:
        raise SystemExit(f"{len(failed)} of {len(runs)} runs failed: {'; '.join(failed)}; the others are done. "
                         "Rerun the same command to continue the failed ones from their last checkpoint")
    rows: dict = {}
    for (name, seed), future in futures.items():
        rows.setdefault(name, {"seeds": {}})["seeds"][seed] = future.result()
    return rows


def run_variant(name: str, seed: int, data: Path, args: argparse.Namespace) -> dict:
    """Train (or resume, or skip) both stages of one (variant, seed) and evaluate it."""
    work = (args.work / name / f"seed-{seed}").resolve()
    work.mkdir(parents=True, exist_ok=True)
    for shared_dir in ("data", "sam"):  # every run reads the same data and stage-0 SAM
        if not (work / shared_dir).exists():
            (work / shared_dir).symlink_to(data.parent / shared_dir, target_is_directory=True)
    log = build.BuildLog(work / "build.json")
    for stage, init, steps in (("stage1", None, args.steps1), ("stage2", work / "stage1" / "final", args.steps2)):
        extra = [*VARIANTS[name], f"seed={seed}", f"optim.max_steps={steps}",
                 f"checkpoint.every={min(args.checkpoint_every, steps)}", f"validate.every={steps}",
                 # SAM-tiny's image encoder is frozen: its embeddings are computed once per image
                 # (the losses are bit-identical with and without; about a tenth of a step saved)
                 f"feature_cache={work / 'feature-cache'}"]
        build.train_stage(stage, work, init, args.procs, extra, log)
    build.evaluate(work, args.eval_limit, log)
    return {"metrics": json.loads((work / "eval" / "metrics.json").read_text()),
            "seconds": sum(log.data.get(s, {}).get("seconds", 0) for s in ("stage1", "stage2"))}


def update_card(card: Path, table: str, command: str | None = None) -> None:
    """Put ``table`` (and the ``command`` that made it) under the card's ``## Ablation`` heading,
    replacing an earlier one."""
    head = card.read_text().split("\n## Ablation\n")[0].rstrip("\n")
    card.write_text(f"{head}\n\n## Ablation\n\n{table}" + (f"\nReproduce: `{command}`\n" if command else ""))


# -- the table ----------------------------------------------------------------------------------------
COLUMNS = (  # header, how to read the value from one run's metrics
    ("cIoU", lambda m: _seg(m, "overall", "ciou")),
    ("gIoU", lambda m: _seg(m, "overall", "giou")),
    ("cIoU coarse", lambda m: _seg(m, "coarse", "ciou")),
    ("cIoU medium", lambda m: _seg(m, "medium", "ciou")),
    ("cIoU fine", lambda m: _seg(m, "fine", "ciou")),
    ("F1", lambda m: _seg(m, "overall", "f1")),
    ("no-[SEG]", lambda m: m.get("no_seg_rate")),
)


def _seg(metrics: dict, bucket: str, key: str):
    seg = metrics.get("segmentation") or {}
    scores = seg.get("overall", {}) if bucket == "overall" else seg.get("by_granularity", {}).get(bucket, {})
    return scores.get(key)


def _runs(row: dict) -> dict:
    """Seed → run of a table row; a row of one run (``{"metrics", "seconds"}``) is seed "-"."""
    return row["seeds"] if "seeds" in row else {"-": row}


def ablation_markdown(rows: dict[str, dict], args: argparse.Namespace) -> str:
    header = ("| variant | cIoU | gIoU | cIoU coarse | cIoU medium | cIoU fine | F1 | no-[SEG] | "
              "fine: IoU target / object | BLEU-4 | train time | seeds |")
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for name, row in rows.items():
        runs = list(_runs(row).values())
        metrics = [r["metrics"] for r in runs]
        cells = [_cell([read(m) for m in metrics]) for _, read in COLUMNS]
        fine = [m.get("fine_vs_parent") or {} for m in metrics]
        bleu = [(m.get("response") or {}).get("bleu4") for m in metrics]
        minutes = sum(r["seconds"] for r in runs) / len(runs) / 60
        seeds = ", ".join(str(s) for s in _runs(row))
        lines.append(f"| {name} | {' | '.join(cells)} | {_cell([f.get('target_iou') for f in fine])} / "
                     f"{_cell([f.get('parent_iou') for f in fine])} | {_cell(bleu)} | {minutes:.1f} min | {seeds} |")
    note = (f"\nEach variant: stage 1 {args.steps1} steps + stage 2 {args.steps2} steps of 8 samples on PRIST-Synth, "
            f"evaluated on the first {args.eval_limit} test dialogues with real multi-turn generation. A cell over "
            "several seeds is their mean ± the sample standard deviation; train time is per run.\n")
    return "\n".join(lines) + "\n" + note + order_note(rows)


def _values(values: list) -> list[float]:
    return [float(v) for v in values if isinstance(v, (int, float))]


def _cell(values: list) -> str:
    numbers = _values(values)
    if not numbers:
        return "n/a"
    mean = sum(numbers) / len(numbers)
    if len(numbers) == 1:
        return f"{mean:.3f}"
    return f"{mean:.3f} ± {_sd(numbers):.3f}"


def _sd(numbers: list[float]) -> float:
    mean = sum(numbers) / len(numbers)
    return math.sqrt(sum((x - mean) ** 2 for x in numbers) / (len(numbers) - 1))


def order_note(rows: dict[str, dict]) -> str:
    """Whether the variants' mean cIoU follows the paper's order, and whether the gaps exceed
    the shipped variant's seed spread."""
    means = {}
    for name, row in rows.items():
        values = _values([_seg(r["metrics"], "overall", "ciou") for r in _runs(row).values()])
        if values:
            means[name] = sum(values) / len(values)
    expected = [n for n in PAPER_ORDER if n in means]
    if len(expected) < 2:
        return ""
    observed = sorted(expected, key=lambda n: -means[n])
    holds = observed == expected
    text = (f"\nOrder by mean cIoU: {' > '.join(f'{n} ({means[n]:.3f})' for n in observed)}; the paper's order "
            f"({' > '.join(expected)}) {'holds' if holds else 'does not hold'}.")
    shipped = _values([_seg(r["metrics"], "overall", "ciou") for r in _runs(rows.get(SHIPPED, {"seeds": {}})).values()])
    if len(shipped) >= 2:
        spread = _sd(shipped)
        gaps = [abs(means[a] - means[b]) for a, b in zip(observed, observed[1:])]
        close = sum(g <= spread for g in gaps)
        text += (f" The seed spread of {SHIPPED} is {spread:.3f} (sd over {len(shipped)} seeds); "
                 f"{close} of the {len(gaps)} gaps between neighbours {'is' if close == 1 else 'are'} within it"
                 + (", so that part of the order is not resolved at this budget." if close else "."))
    return text + "\n"


if __name__ == "__main__":
    sys.exit(main())
