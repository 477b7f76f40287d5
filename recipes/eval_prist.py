"""Evaluate a preset on a PRIST-format split with real generation: masks, answers, metrics.

    pixelagent recipe eval-prist --preset miras-tiny --data DIR [--split test] [--out DIR]
        [--limit N] [--metrics bleu4,dist,rouge_l,meteor,bertscore] [--device cpu]

For every dialogue of the split the model answers each user turn itself (its own earlier
answers stay in the history: real generation, never teacher-forced). A turn whose reference
answer holds ``[SEG]`` is a segmentation turn: its reply's mask (the union of its targets; none
if the model produced no ``[SEG]``) is scored against the union of that turn's target masks.
The other turns are reasoning turns: their answers are scored against the references with the
response metrics (markup removed on both sides).

Writes into ``--out`` (default ``eval-<preset>-<split>``):
- ``predictions.jsonl``: one line per dialogue, appended as it finishes; a rerun skips the
  dialogues already there, so an interrupted evaluation resumes where it stopped;
- ``metrics.json``: segmentation (cIoU, gIoU, precision / recall / F1 accumulated and per-sample,
  overall and by granularity), the no-``[SEG]`` rate, response metrics with the implementation
  of each;
- ``table3.md``: the paper's Table 3 layout; ``by_granularity.png``: cIoU and F1 by granularity.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from pixelagent import Agent, Mask
from pixelagent.mask import Granularity
from pixelagent.data.records import PristRecord, load_split, resolve_in
from pixelagent.errors import ConfigError
from pixelagent.files import check_regular_file, read_text
from pixelagent.eval import SegmentationMeter, plot_by_granularity, response_metrics, table3_markdown, table3_row
from pixelagent.markup import find_focus_spans, render_plain


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="pixelagent recipe eval-prist", description=__doc__.splitlines()[0])
    parser.add_argument("--preset", required=True, help="preset name, YAML file or saved model directory")
    parser.add_argument("--data", required=True, type=Path, help="canonical dataset directory")
    parser.add_argument("--split", default="test", choices=["train", "val", "test"])
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--limit", type=int, default=None, help="evaluate the first N dialogues only")
    parser.add_argument("--metrics", default="bleu4,dist,rouge_l,meteor,bertscore",
                        help="comma-separated response metrics, or 'none'")
    parser.add_argument("--device", default=None, help="override the preset's device (cpu, cuda, ...)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    records = load_split(args.data, args.split)[: args.limit]
    out = args.out or Path(f"eval-{Path(args.preset).name}-{args.split}")
    out.mkdir(parents=True, exist_ok=True)
    predictions_path = out / "predictions.jsonl"
    done = read_predictions(predictions_path)
    todo = [r for r in records if r.id not in done]
    if todo:
        agent = Agent(args.preset, **({"device": args.device} if args.device else {}))
        run_all(agent, todo, args.data, predictions_path)
    metrics = compute_metrics(records, read_predictions(predictions_path), _metric_names(args.metrics))
    write_reports(out, Path(args.preset).name, args.split, metrics)
    print(summary_line(metrics, out))
    return 0


def read_predictions(path: Path) -> dict[str, dict]:
    """Dialogue id → its prediction line.

    A line that is not a whole prediction (a torn last line, killed mid-write) is ignored, so
    its dialogue is run again; a file that is not a regular UTF-8 file is a ConfigError.
    """
    if not path.exists():
        return {}
    predictions = {}
    for line in read_text(path, "predictions file").splitlines():
        try:
            entry = json.loads(line)
        except (ValueError, RecursionError):
            continue
        if _is_prediction(entry):
            predictions[entry["id"]] = entry
    return predictions


def _is_prediction(entry: object) -> bool:
    """Whether a predictions line has the shape :func:`predict` writes."""
    return (isinstance(entry, dict) and isinstance(entry.get("id"), str) and isinstance(entry.get("answers"), list)
            and all(isinstance(a, str) for a in entry["answers"]) and isinstance(entry.get("masks"), list)
            and all(m is None or isinstance(m, dict) for m in entry["masks"]))


def run_all(agent: Agent, records: list[PristRecord], data_dir: Path, path: Path) -> None:
    columns = (TextColumn("evaluating"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns) as progress, path.open("a", encoding="utf-8") as handle:
        task = progress.add_task("eval", total=len(records))
        for record in records:
            handle.write(json.dumps(predict(agent, record, data_dir)) + "\n")
            handle.flush()  # each finished dialogue is kept, whatever happens next
            progress.advance(task)


def predict(agent: Agent, record: PristRecord, data_dir: Path) -> dict:
    """Run one dialogue; the masks of its segmentation turns as COCO RLE (None: no [SEG])."""
    image = resolve_in(data_dir, record.image, f"record {record.id}")
    if not image.exists():
        raise ConfigError(f"record {record.id}: image {image} does not exist; check --data")
    check_regular_file(image, f"record {record.id}: image")  # a FIFO or device would block or never end
    start = time.perf_counter()
    session = agent.session(image)
    answers, masks = [], []
    for question, reference in record.turns:
        reply = session.ask(question)
        answers.append(reply.raw_text)
        if find_focus_spans(reference):
            masks.append(None if reply.mask is None else reply.mask.to_rle())
    return {"id": record.id, "answers": answers, "masks": masks, "seconds": time.perf_counter() - start}


def compute_metrics(records: list[PristRecord], predictions: dict[str, dict], metrics: list[str]) -> dict:
    """Metrics over every record of the split that has a prediction."""
    meter, generated, references, seg_turns, no_seg = SegmentationMeter(), [], [], 0, 0
    fine = {"target": [], "parent": []}
    scored = [r for r in records if r.id in predictions]
    for record in scored:
        prediction = predictions[record.id]
        for pred, turn in zip(prediction["masks"], _turn_annotations(record)):
            seg_turns += 1
            no_seg += pred is None
            predicted = None if pred is None else Mask.from_rle(pred)
            known = [t.mask for t in turn if t is not None and t.mask is not None]
            if known and len(known) == len(turn):
                meter.add(predicted, Mask.union_all(known))
            single = turn[0] if len(turn) == 1 and known else None
            if single is not None and single.parent is not None and single.granularity == Granularity.FINE:
                fine["target"].append(_iou(predicted, single.mask))
                fine["parent"].append(_iou(predicted, single.parent))
        for (question, reference), answer in zip(record.turns, prediction["answers"]):
            if not find_focus_spans(reference):
                generated.append(render_plain(answer))
                references.append(render_plain(reference))
    return {
        "samples": len(scored),
        "segmentation": meter.result().model_dump() if len(meter) else None,
        "no_seg_rate": no_seg / seg_turns if seg_turns else None,
        # fine targets (a part or word) whose object is known: does the mask find the target
        # itself, or only its object? Mean IoU with each, over the same turns.
        "fine_vs_parent": {"turns": len(fine["target"]),
                           "target_iou": sum(fine["target"]) / len(fine["target"]) if fine["target"] else None,
                           "parent_iou": sum(fine["parent"]) / len(fine["parent"]) if fine["parent"] else None},
        "response": response_metrics(generated, references, metrics).model_dump() if metrics and generated else None,
    }


def _turn_annotations(record: PristRecord) -> list[list]:
    """Per segmentation turn, its target annotations in ``[SEG]`` order (None where the record
    has fewer targets than ``[SEG]`` tokens)."""
    targets, turns = iter(record.targets), []
    for _, reference in record.turns:
        spans = find_focus_spans(reference)
        if spans:
            turns.append([next(targets, None) for _ in spans])
    return turns


def _iou(predicted: Mask | None, truth: Mask) -> float:
    """IoU of a prediction with a (non-empty) truth; no prediction scores 0."""
    return 0.0 if predicted is None else predicted.iou(truth)


def _metric_names(text: str) -> list[str]:
    return [] if text.strip().lower() == "none" else [m.strip() for m in text.split(",") if m.strip()]


def write_reports(out: Path, model: str, split: str, metrics: dict) -> None:
    from pixelagent.eval.response import ResponseScores
    from pixelagent.eval.segmentation import SegmentationScores

    (out / "metrics.json").write_text(json.dumps({"model": model, "split": split, **metrics}, indent=2))
    segmentation = metrics["segmentation"] and SegmentationScores.model_validate(metrics["segmentation"])
    response = metrics["response"] and ResponseScores.model_validate(metrics["response"])
    (out / "table3.md").write_text(table3_markdown({model: table3_row(segmentation or None, response or None)}))
    if segmentation:
        plot_by_granularity(segmentation, out / "by_granularity.png", title=f"{model} on {split}")


def summary_line(metrics: dict, out: Path) -> str:
    seg = metrics["segmentation"]
    parts = [f"{metrics['samples']} dialogues"]
    if seg:
        overall = seg["overall"]
        parts.append(f"cIoU {overall['ciou']:.3f}, gIoU {overall['giou']:.3f}, F1 {overall['f1']:.3f}")
    if metrics["no_seg_rate"] is not None:
        parts.append(f"no [SEG] {metrics['no_seg_rate']:.1%}")
    fine = metrics.get("fine_vs_parent") or {}
    if fine.get("turns"):
        parts.append(f"fine targets: IoU {fine['target_iou']:.3f} with the target, "
                     f"{fine['parent_iou']:.3f} with its object")
    return "; ".join(parts) + f" → {out}"


if __name__ == "__main__":
    raise SystemExit(main())
