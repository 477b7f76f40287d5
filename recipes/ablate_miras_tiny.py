"""The paper's Table 6 in miniature: miras-tiny against its ablations, all trained the same way.

    pixelagent recipe ablate-miras-tiny [--work runs/ablate-miras-tiny] [--data runs/build-miras-tiny/data]
        [--procs 2] [--steps1 300] [--steps2 400] [--eval-limit 100] [--variants a,b,...]

Variants (each trained with ``miras_tiny/stage1`` then ``miras_tiny/stage2``, the same data,
seeds and step counts, and evaluated with ``eval-prist`` on the PRIST-Synth test split):

- ``miras-tiny``: the full model;
- ``no-sra``: semantic region alignment replaced by LISA's ``[SEG]`` projection;
- ``no-dual``: the dual encoder replaced by the CLIP encoder alone (no ConvNeXt, no fusion);
- ``lisa-tiny``: the LISA architecture (CLIP + ``[SEG]`` projection).

The data and the stage-0 SAM-tiny come from ``build-miras-tiny`` (its ``data`` and ``sam`` steps
run first if they are missing).
Writes WORK/<variant>/{stage1,stage2,eval} and WORK/ablation.md / ablation.json; finished
steps are skipped when the recipe is run again.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import build_miras_tiny as build  # noqa: E402  (a sibling recipe, not a library module)

VARIANTS: dict[str, list[str]] = {
    "miras-tiny": [],
    "no-sra": ["preset_overrides.alignment=lisa-projection"],
    "no-dual": ["preset_overrides.visual_encoder={name: clip, settings: {tiny: true, train_backbone: true}}"],
    "lisa-tiny": ["preset=lisa-tiny"],  # the configs' train_backbone applies to its CLIP encoder
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="pixelagent recipe ablate-miras-tiny", description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("runs/ablate-miras-tiny"))
    parser.add_argument("--data", type=Path, default=Path("runs/build-miras-tiny/data"),
                        help="the data folder of build-miras-tiny (made if missing)")
    parser.add_argument("--procs", type=int, default=1)
    parser.add_argument("--steps1", type=int, default=300, help="stage-1 optimiser steps per variant")
    parser.add_argument("--steps2", type=int, default=400, help="stage-2 optimiser steps per variant")
    parser.add_argument("--eval-limit", type=int, default=100)
    parser.add_argument("--sam-steps", type=int, default=build.SAM_STEPS,
                        help="stage-0 steps, when the build's SAM-tiny is not there yet")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--card", type=Path, default=None,
                        help="a model card whose '## Ablation' section gets the table (e.g. the shipped MODEL_CARD.md)")
    return parser.parse_args(argv)


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
    rows = {}
    for name in names:
        work = (args.work / name).resolve()
        work.mkdir(parents=True, exist_ok=True)
        for shared_dir in ("data", "sam"):  # every variant reads the same data and stage-0 SAM
            if not (work / shared_dir).exists():
                (work / shared_dir).symlink_to(data.parent / shared_dir, target_is_directory=True)
        log = build.BuildLog(work / "build.json")
        for stage, init, steps in (("stage1", None, args.steps1), ("stage2", work / "stage1" / "final", args.steps2)):
            extra = [*VARIANTS[name], f"optim.max_steps={steps}", f"checkpoint.every={steps}",
                     f"validate.every={steps}"]
            build.train_stage(stage, work, init, args.procs, extra, log)
        build.evaluate(work, args.eval_limit, log)
        rows[name] = {"metrics": json.loads((work / "eval" / "metrics.json").read_text()),
                      "seconds": sum(log.data.get(s, {}).get("seconds", 0) for s in ("stage1", "stage2"))}
    table = ablation_markdown(rows, args)
    (args.work / "ablation.md").write_text(table)
    (args.work / "ablation.json").write_text(json.dumps(rows, indent=2) + "\n")
    if args.card is not None:
        update_card(args.card, table, "pixelagent recipe ablate-miras-tiny " + " ".join(argv or sys.argv[1:]))
    print(table)
    return 0


def update_card(card: Path, table: str, command: str | None = None) -> None:
    """Put ``table`` (and the ``command`` that made it) under the card's ``## Ablation`` heading,
    replacing an earlier one."""
    head = card.read_text().split("\n## Ablation\n")[0].rstrip("\n")
    card.write_text(f"{head}\n\n## Ablation\n\n{table}" + (f"\nReproduce: `{command}`\n" if command else ""))


def ablation_markdown(rows: dict[str, dict], args: argparse.Namespace) -> str:
    header = ("| variant | cIoU | gIoU | cIoU coarse | cIoU medium | cIoU fine | F1 | no-[SEG] | "
              "fine: IoU target / object | BLEU-4 | train time |")
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for name, row in rows.items():
        m = row["metrics"]
        seg = m.get("segmentation") or {}
        overall, by = seg.get("overall", {}), seg.get("by_granularity", {})
        fine = m.get("fine_vs_parent") or {}
        bleu = ((m.get("response") or {}).get("bleu4"))
        lines.append(
            f"| {name} | {_f(overall.get('ciou'))} | {_f(overall.get('giou'))} | "
            f"{_f(by.get('coarse', {}).get('ciou'))} | {_f(by.get('medium', {}).get('ciou'))} | "
            f"{_f(by.get('fine', {}).get('ciou'))} | {_f(overall.get('f1'))} | {_f(m.get('no_seg_rate'))} | "
            f"{_f(fine.get('target_iou'))} / {_f(fine.get('parent_iou'))} | {_f(bleu)} | {row['seconds'] / 60:.1f} min |")
    note = (f"\nEach variant: stage 1 {args.steps1} steps + stage 2 {args.steps2} steps of 8 samples on PRIST-Synth, "
            f"evaluated on the first {args.eval_limit} test dialogues with real multi-turn generation.\n")
    return "\n".join(lines) + "\n" + note


def _f(value) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) else "n/a"


if __name__ == "__main__":
    sys.exit(main())
