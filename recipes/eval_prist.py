"""Evaluate a preset on a PRIST-format split with real generation: masks, answers, metrics.

    pixelagent recipe eval-prist --preset miras-tiny --data DIR|test.json [--split test] [--out DIR]
        [--images DIR] [--annotations DIR] [--exact-labels] [--limit N] [--device cpu]
        [--protocol pixelagent|paper] [--segmentation-prompt FILE] [--scoring union|per-mask]
        [--metrics bleu4,dist,rouge_l,meteor,bertscore] [--bertscore-model M] [--bertscore-layer L]
        [--bertscore-rescale] [--dist-tokenize whitespace|13a]

``--data`` is a canonical dataset folder (``<split>.jsonl`` + images) or a published PRIST file
(``test.json``, read unchanged). For a published file, ``--images DIR`` is the folder of its
TextCaps/OpenImages images, found by ``img_id`` (default: ``images/`` beside the file), and
``--annotations DIR`` the folder of its LabelMe ``{stem}.json`` masks; without annotations the
run is **response-only**: the model still answers (and segments) every turn, the response
metrics are computed, and the segmentation columns are ``null``, as the report says. (A later
run with ``--annotations`` and the same ``--out`` scores the saved masks without running the
model again.) For a canonical folder, ``--images DIR`` replaces its ``images/`` folder.

A dialogue whose image is missing or unreadable is **listed and skipped**, never replaced: the
others are evaluated, the report names the skipped ones (``metrics.json`` → ``skipped``), and
the run ends with exit code 1 and one line saying how many; put the images in place and rerun
with the same ``--out`` to evaluate them too.

For every dialogue the model answers each user turn itself (its own earlier answers stay in the
history: real generation, never teacher-forced). A turn whose reference answer holds ``[SEG]``
is a segmentation turn (in PRIST the last one, the templated segmentation request); the others
are reasoning turns. Segmentation is scored two ways, both in ``metrics.json``:

- ``segmentation`` (per turn, the default): the union of the reply's masks against the union of
  the turn's target masks;
- ``segmentation_per_mask`` (LISA's way): the k-th predicted mask against the k-th target, each
  pair one sample (a missing prediction is an empty mask; masks beyond the targets are counted
  as ``extra_masks`` and not scored). ``--scoring`` picks which one ``table3.md`` shows.

Two rates, separately: ``no_seg_rate``, the segmentation turns whose reply named no target (no
``[SEG]`` token; for box models no box), and ``empty_mask_rate``, those where it named one but
every mask came out empty.

``--protocol`` (see :mod:`pixelagent.eval.protocol`): ``pixelagent`` (default) scores the
response metrics on the reasoning answers of every model; ``paper`` follows the paper: models
trained with the segmentation template are scored on every answer, the segmentation answer
included, while a general-MLLM baseline (``openai-chat``) is asked as Appendix C.3 does (its
segmentation prompt, or ``--segmentation-prompt FILE``, only in the segmentation query; no
system prompt) and its last round is excluded ("for fairness, we exclude the last round of
dialogue").

Writes into ``--out`` (default ``eval-<preset>-<split>``):
- ``predictions.jsonl``: one line per dialogue, appended as it finishes; a rerun skips the
  dialogues already there, so an interrupted evaluation resumes where it stopped (torn or
  foreign lines are ignored and counted);
- ``run.json``: how the predictions were made (baseline or not, protocol);
- ``metrics.json``: all of the above with the implementation of each response metric;
- ``table3.md``: the paper's Table 3 layout; ``by_granularity.png``: cIoU and F1 by granularity.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Optional

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from pixelagent import Agent, Mask
from pixelagent.data.records import PristRecord, load_split, resolve_in
from pixelagent.errors import ConfigError, ImageError
from pixelagent.eval import SegmentationMeter, plot_by_granularity, response_metrics, table3_markdown, table3_row
from pixelagent.eval.phrases import FocusPhraseMeter
from pixelagent.eval.protocol import PROTOCOLS, SegmentationQuery, is_general_mllm
from pixelagent.files import check_regular_file, make_output_folder, read_text
from pixelagent.markup import find_focus_spans, render_plain
from pixelagent.mask import Granularity
from pixelagent.arguments import non_negative_int, positive_int


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="pixelagent recipe eval-prist", description=__doc__.splitlines()[0])
    parser.add_argument("--preset", required=True, help="preset name, YAML file or saved model directory")
    parser.add_argument("--data", required=True, type=Path,
                        help="canonical dataset directory, or a published PRIST file (test.json)")
    parser.add_argument("--split", default="test", choices=["train", "val", "test"])
    parser.add_argument("--images", type=Path, default=None,
                        help="folder of the images (published: by img_id; canonical: replaces DATA/images)")
    parser.add_argument("--annotations", type=Path, default=None,
                        help="published data only: folder of the LabelMe {stem}.json masks")
    parser.add_argument("--exact-labels", action="store_true",
                        help="published data: fill only shapes labelled exactly with the focus")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--limit", type=positive_int, default=None, help="evaluate the first N dialogues only")
    parser.add_argument("--metrics", default="bleu4,dist,rouge_l,meteor,bertscore",
                        help="comma-separated response metrics, or 'none'")
    parser.add_argument("--device", default=None, help="override the preset's device (cpu, cuda, ...)")
    parser.add_argument("--protocol", default="pixelagent", choices=PROTOCOLS)
    parser.add_argument("--segmentation-prompt", type=Path, default=None,
                        help="paper protocol, general MLLMs: your own Appendix C.3 prompt file")
    parser.add_argument("--scoring", default="union", choices=["union", "per-mask"],
                        help="what table3.md shows (metrics.json has both)")
    parser.add_argument("--bertscore-model", default=None,
                        help="local model directory or a bert-score model name (roberta-large) in the local cache")
    parser.add_argument("--bertscore-layer", type=non_negative_int, default=None)
    parser.add_argument("--bertscore-rescale", action="store_true")
    parser.add_argument("--dist-tokenize", default="whitespace", choices=["whitespace", "13a"])
    args = parser.parse_args(argv)
    from pixelagent.eval.response import METRICS

    unknown = [name for name in _metric_names(args.metrics) if name not in METRICS]
    if unknown:  # before the model is built, not after every dialogue has been answered
        parser.error(f"unknown response metric(s) {unknown} in --metrics; choose from {', '.join(sorted(METRICS))} "
                     "or 'none'")
    return args


# -- the data ------------------------------------------------------------------------------------
class Source:
    """Where the records came from and where their images are; ``invalid``: published records
    that could not be read (a plain class: recipes are run without a module entry, which
    dataclasses need)."""

    def __init__(self, data: Path, images: Optional[Path], published: bool, records: list[PristRecord],
                 invalid: Optional[list[dict]] = None) -> None:
        self.data, self.images, self.published = data, images, published
        self.records, self.invalid = records, invalid or []

    def image_path(self, record: PristRecord) -> Path:
        return image_path(record, self.data if not self.published else self.data.parent, self.images)


def load_source(args: argparse.Namespace) -> Source:
    """The records of ``--data`` (canonical folder or published file), checked before any model runs."""
    for flag, folder in (("--images", args.images), ("--annotations", args.annotations)):
        if folder is not None and not folder.is_dir():
            raise ConfigError(f"{flag} {folder} is not a folder; give the folder of the "
                              f"{'images' if flag == '--images' else 'LabelMe files'}")
    if args.data.is_dir():
        if args.annotations is not None:
            raise ConfigError("--annotations is for a published PRIST file; a canonical dataset holds its masks")
        return Source(args.data, args.images, False, load_split(args.data, args.split)[: args.limit])
    return _published(args)


def _published(args: argparse.Namespace) -> Source:
    from pixelagent.data.prist import Skipped, iter_published

    check_regular_file(args.data, "--data")
    images = args.images or args.data.parent / "images"
    records, invalid = [], []
    for item in iter_published(args.data, annotations_dir=args.annotations, split=args.split,
                               label_match="exact" if args.exact_labels else "contains"):
        if args.limit is not None and len(records) + len(invalid) >= args.limit:
            break
        if isinstance(item, Skipped):
            invalid.append({"id": item.id, "image": None, "reason": str(item.error)})
        else:
            records.append(item)
    return Source(args.data, images, True, records, invalid)


def image_path(record: PristRecord, data_dir: Path, images: Optional[Path] = None) -> Path:
    """The file of a record's image: inside ``data_dir`` as the record names it, or, with
    ``images``, inside that folder by the path below ``images/`` (the published ``img_id``)."""
    if images is None:
        return resolve_in(data_dir, record.image, f"record {record.id}")
    relative = record.image.split("/", 1)[1] if record.image.startswith("images/") else record.image
    return resolve_in(images, relative, f"record {record.id}")


class MissingImage(ConfigError):
    """A record's image is not there (or cannot be read): the dialogue is skipped and listed."""


# -- running the model -------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    source = load_source(args)
    out = make_output_folder(args.out or Path(f"eval-{Path(args.preset).name}-{args.split}"), "--out folder")
    predictions_path = out / "predictions.jsonl"
    done, torn = read_predictions(predictions_path, count_unreadable=True)
    todo = [r for r in source.records if r.id not in done]
    missing = [{"id": r.id, "image": str(source.image_path(r)), "reason": "image does not exist"}
               for r in todo if not source.image_path(r).exists()]
    todo = [r for r in todo if r.id not in {m["id"] for m in missing}]
    run = read_run(out)
    if todo:
        agent = Agent(args.preset, **({"device": args.device} if args.device else {}))
        run = start_run(agent, args, out, run)
        missing += run_all(agent, todo, source, predictions_path, mark=run["baseline"] and args.protocol == "paper")
    skipped = source.invalid + missing
    for item in skipped:
        print(f"skipped {item['id']}: {item['reason']}" + (f" ({item['image']})" if item["image"] else ""),
              file=sys.stderr)
    metrics = compute_metrics(source.records, read_predictions(predictions_path), _metric_names(args.metrics),
                              protocol=args.protocol, baseline=bool(run.get("baseline")),
                              options=_response_options(args))
    metrics.update(data=str(args.data), skipped=skipped, unreadable_prediction_lines=torn, scoring=args.scoring)
    write_reports(out, Path(args.preset).name, args.split, metrics)
    print(summary_line(metrics, out))
    if skipped:
        raise ConfigError(f"{len(skipped)} of {len(source.records) + len(source.invalid)} dialogues skipped (listed "
                          "above and in metrics.json): put their images in place (--images) and rerun with the "
                          "same --out to evaluate them too")
    return 0


def read_run(out: Path) -> dict:
    path = out / "run.json"
    if not path.is_file():
        return {}
    try:
        data = json.loads(read_text(path, "run file"))
    except ValueError:
        raise ConfigError(f"{path} is not valid JSON; delete it (and predictions.jsonl) to start over") from None
    return data if isinstance(data, dict) else {}


def start_run(agent: Agent, args: argparse.Namespace, out: Path, previous: dict) -> dict:
    """Configure a general-MLLM baseline for the protocol and record how predictions are made;
    refuse to mix predictions made under two protocols in one --out."""
    llm = agent.parts["llm"]
    baseline = is_general_mllm(llm)
    if baseline and hasattr(llm, "configure"):
        if args.protocol == "paper":
            llm.configure(protocol="paper", segmentation_prompt=args.segmentation_prompt,
                          segmentation_queries="marked")
        else:
            llm.configure(protocol="pixelagent")
    elif args.segmentation_prompt is not None:
        raise ConfigError("--segmentation-prompt is for a general-MLLM baseline (openai-chat) under --protocol "
                          f"paper; {args.preset} is not one")
    asked = args.protocol if baseline else None
    if previous and previous.get("asked_with") != asked:
        raise ConfigError(f"the predictions in {out} were made with protocol {previous.get('asked_with')!r}, "
                          f"this run would ask with {asked!r}; use another --out")
    run = {"preset": args.preset, "baseline": baseline, "asked_with": asked,
           "segmentation_prompt": getattr(getattr(llm, "segmentation_template", None), "source", None)}
    (out / "run.json").write_text(json.dumps(run, indent=2) + "\n")
    return run


def read_predictions(path: Path, count_unreadable: bool = False):
    """Dialogue id → its prediction line (and, with ``count_unreadable``, how many lines were
    ignored).

    A line that is not a whole prediction (a torn last line, killed mid-write, or garbage) is
    ignored, so its dialogue is run again; a file that is not a regular UTF-8 file is a ConfigError.
    """
    predictions, unreadable = {}, 0
    if path.exists():
        for line in read_text(path, "predictions file").splitlines():
            try:
                entry = json.loads(line)
            except (ValueError, RecursionError):
                entry = None
            if _is_prediction(entry):
                predictions[entry["id"]] = entry
            elif line.strip():
                unreadable += 1
    return (predictions, unreadable) if count_unreadable else predictions


def _is_prediction(entry: object) -> bool:
    """Whether a predictions line has the shape :func:`predict` writes (older lines lack
    ``targets`` and ``named``)."""
    if not (isinstance(entry, dict) and isinstance(entry.get("id"), str) and isinstance(entry.get("answers"), list)
            and all(isinstance(a, str) for a in entry["answers"]) and isinstance(entry.get("masks"), list)
            and all(m is None or isinstance(m, dict) for m in entry["masks"])):
        return False
    targets, named = entry.get("targets"), entry.get("named")
    return ((targets is None or (isinstance(targets, list) and len(targets) == len(entry["masks"]) and all(
                isinstance(t, list) and all(isinstance(m, dict) for m in t) for t in targets)))
            and (named is None or (isinstance(named, list) and len(named) == len(entry["masks"])
                                   and all(isinstance(n, int) and not isinstance(n, bool) for n in named))))


def run_all(agent: Agent, records: list[PristRecord], source: Source, path: Path, mark: bool = False) -> list[dict]:
    """Predict every record, appending each line as it finishes; returns the skipped ones."""
    columns = (TextColumn("evaluating"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    skipped = []
    # progress on stderr: stdout carries only the summary line
    bar = Progress(*columns, console=Console(stderr=True), disable=not sys.stderr.isatty())
    with bar as progress, path.open("a", encoding="utf-8") as handle:
        if handle.tell() and not _ends_with_newline(path):
            handle.write("\n")  # a torn last line (killed mid-write) must not swallow the next one
        task = progress.add_task("eval", total=len(records))
        for record in records:
            try:
                line = predict(agent, record, source.data if not source.published else source.data.parent,
                               source.images, mark=mark)
            except MissingImage as exc:
                skipped.append({"id": record.id, "image": str(source.image_path(record)), "reason": str(exc)})
            else:
                handle.write(json.dumps(line) + "\n")
                handle.flush()  # each finished dialogue is kept, whatever happens next
            progress.advance(task)
    return skipped


def _ends_with_newline(path: Path) -> bool:
    with path.open("rb") as handle:
        handle.seek(-1, 2)
        return handle.read(1) == b"\n"


def predict(agent: Agent, record: PristRecord, data_dir: Path, images: Optional[Path] = None, *,
            mark: bool = False) -> dict:
    """Run one dialogue. Per segmentation turn: the union mask (COCO RLE, None when no mask),
    each target's mask, and how many targets the reply named. ``mark`` wraps the segmentation
    queries in :class:`SegmentationQuery` (the C.3 protocol)."""
    image = image_path(record, data_dir, images)
    if not image.exists():
        raise MissingImage(f"record {record.id}: image {image} does not exist; check --images / --data")
    check_regular_file(image, f"record {record.id}: image")  # a FIFO or device would block or never end
    start = time.perf_counter()
    try:
        session = agent.session(image)
    except ImageError as exc:
        raise MissingImage(f"record {record.id}: image {image} cannot be read: {exc}") from None
    answers, masks, targets, named = [], [], [], []
    for question, reference in record.turns:
        segmentation = bool(find_focus_spans(reference))
        reply = session.ask(SegmentationQuery(question) if mark and segmentation else question)
        answers.append(reply.raw_text)
        if segmentation:
            masks.append(None if reply.mask is None else reply.mask.to_rle())
            targets.append([t.mask.to_rle() for t in reply.targets])
            named.append(_named(reply))
    return {"id": record.id, "answers": answers, "masks": masks, "targets": targets, "named": named,
            "seconds": time.perf_counter() - start}


def _named(reply) -> int:
    """How many targets a reply named: its [SEG] spans, or (box models) its targets, or one when
    the decoder was asked and found nothing (``reply.reason``)."""
    return max(len(find_focus_spans(reply.raw_text)), len(reply.targets), 1 if reply.reason else 0)


# -- metrics -------------------------------------------------------------------------------------------
def compute_metrics(records: list[PristRecord], predictions: dict[str, dict], metrics: list[str], *,
                    protocol: str = "pixelagent", baseline: bool = False, options: Optional[dict] = None) -> dict:
    """Metrics over every record of the split that has a prediction (see the module docstring)."""
    union, per_mask = SegmentationMeter(), SegmentationMeter()
    counts = {"seg_turns": 0, "no_seg": 0, "empty": 0, "extra_masks": 0, "turns_with_masks": 0}
    fine = {"target": [], "parent": []}
    generated, references = [], []
    last_round = protocol == "paper" and not baseline  # the paper scores the template answers of trained models
    scored = [r for r in records if r.id in predictions]
    phrases = FocusPhraseMeter()
    for record in scored:
        prediction = predictions[record.id]
        _score_segmentation(record, prediction, union, per_mask, counts, fine)
        if not baseline:  # general MLLMs answer with boxes, not named phrases
            phrases.add(_final_phrase(record, prediction), record.focus)
        for (_, reference), answer in zip(record.turns, prediction["answers"]):
            if last_round or not find_focus_spans(reference):
                generated.append(render_plain(answer))
                references.append(render_plain(reference))
    seg_turns = counts["seg_turns"]
    mode = "segmentation and response" if counts["turns_with_masks"] else "response-only"
    return {
        "samples": len(scored),
        "mode": mode,
        "protocol": protocol,
        "baseline": baseline,
        "response_turns": ("every answer, the segmentation answers included (paper protocol)" if last_round else
                           "the reasoning answers; the last round excluded (paper protocol, general MLLM, "
                           "Appendix C.3)" if protocol == "paper" else
                           "the reasoning answers (the segmentation answers left out)"),
        "segmentation": union.result().model_dump() if len(union) else None,
        "segmentation_per_mask": per_mask.result().model_dump() if len(per_mask) else None,
        "segmentation_note": None if len(union) else
            "this split has no target masks; pass --annotations DIR with the LabelMe files (or a canonical "
            "dataset with masks) to score the saved masks",
        "seg_turns": seg_turns,
        "seg_turns_scored": counts["turns_with_masks"],
        "no_seg_rate": counts["no_seg"] / seg_turns if seg_turns else None,
        "empty_mask_rate": counts["empty"] / seg_turns if seg_turns else None,
        "extra_masks": counts["extra_masks"],
        # fine targets (a part or word) whose object is known: does the mask find the target
        # itself, or only its object? Mean IoU with each, over the same turns.
        "fine_vs_parent": {"turns": len(fine["target"]),
                           "target_iou": sum(fine["target"]) / len(fine["target"]) if fine["target"] else None,
                           "parent_iou": sum(fine["parent"]) / len(fine["parent"]) if fine["parent"] else None},
        # what the final segmentation answer named against the true focus: the word it read,
        # the place and the colour (pixelagent.eval.phrases)
        "focus_phrases": phrases.result() if phrases.dialogues else None,
        "response": response_metrics(generated, references, metrics, **(options or {})).model_dump()
        if metrics and generated else None,
    }


def _segmentation_answers(record: PristRecord, prediction: dict) -> list[str]:
    """The model's answers to the record's segmentation turns (those whose reference has a focus)."""
    return [a for (_, ref), a in zip(record.turns, prediction["answers"]) if find_focus_spans(ref)]


def _final_phrase(record: PristRecord, prediction: dict) -> Optional[str]:
    """The phrase the model named in the dialogue's last segmentation answer (None: none)."""
    answers = _segmentation_answers(record, prediction)
    spans = find_focus_spans(answers[-1]) if answers else []
    return spans[0].phrase if spans and spans[0].phrase else None


def _score_segmentation(record: PristRecord, prediction: dict, union: SegmentationMeter,
                        per_mask: SegmentationMeter, counts: dict, fine: dict) -> None:
    seg_answers = _segmentation_answers(record, prediction)
    targets = prediction.get("targets") or [[m] if m else [] for m in prediction["masks"]]
    named = prediction.get("named") or [
        max(len(find_focus_spans(a)), int(m is not None)) for a, m in zip(seg_answers, prediction["masks"])]
    for pred, turn, masks, count in zip(prediction["masks"], _turn_annotations(record), targets, named):
        counts["seg_turns"] += 1
        counts["no_seg"] += count == 0
        counts["empty"] += count > 0 and pred is None
        predicted = None if pred is None else Mask.from_rle(pred)
        known = [t.mask for t in turn if t is not None and t.mask is not None]
        if not known or len(known) != len(turn):
            continue
        counts["turns_with_masks"] += 1
        union.add(predicted, Mask.union_all(known))
        for k, truth in enumerate(known):
            per_mask.add(Mask.from_rle(masks[k]) if k < len(masks) else None, truth)
        counts["extra_masks"] += max(0, len(masks) - len(known))
        single = turn[0] if len(turn) == 1 else None
        if single is not None and single.parent is not None and single.granularity == Granularity.FINE:
            fine["target"].append(_iou(predicted, single.mask))
            fine["parent"].append(_iou(predicted, single.parent))


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


def _response_options(args: argparse.Namespace) -> dict:
    return {"bertscore_model": args.bertscore_model, "bertscore_layer": args.bertscore_layer,
            "bertscore_rescale": args.bertscore_rescale, "dist_tokenize": args.dist_tokenize}


# -- reports -------------------------------------------------------------------------------------------
def write_reports(out: Path, model: str, split: str, metrics: dict) -> None:
    from pixelagent.eval.response import ResponseScores
    from pixelagent.eval.segmentation import SegmentationScores

    (out / "metrics.json").write_text(json.dumps({"model": model, "split": split, **metrics}, indent=2))
    key = "segmentation_per_mask" if metrics.get("scoring") == "per-mask" else "segmentation"
    segmentation = metrics[key] and SegmentationScores.model_validate(metrics[key])
    response = metrics["response"] and ResponseScores.model_validate(metrics["response"])
    notes = [f"Segmentation scored {'per mask (LISA)' if key != 'segmentation' else 'per turn (union of masks)'}; "
             f"response metrics on {metrics.get('response_turns', 'the reasoning answers')}; "
             f"protocol {metrics.get('protocol', 'pixelagent')}."]
    if not segmentation:
        notes.append("Response-only: " + (metrics.get("segmentation_note") or "no masks were scored") + ".")
    if metrics.get("skipped"):
        notes.append(f"{len(metrics['skipped'])} dialogue(s) skipped (missing images or unreadable records).")
    table = table3_markdown({model: table3_row(segmentation or None, response or None)})
    (out / "table3.md").write_text(table + "\n" + "\n".join(notes) + "\n")
    if segmentation:
        plot_by_granularity(segmentation, out / "by_granularity.png", title=f"{model} on {split}")


def summary_line(metrics: dict, out: Path) -> str:
    seg = metrics["segmentation"]
    parts = [f"{metrics['samples']} dialogues"]
    if seg:
        overall = seg["overall"]
        parts.append(f"cIoU {overall['ciou']:.3f}, gIoU {overall['giou']:.3f}, F1 {overall['f1']:.3f}")
    else:
        parts.append("response-only (no masks)")
    if metrics["no_seg_rate"] is not None:
        parts.append(f"no [SEG] {metrics['no_seg_rate']:.1%}, empty masks {metrics['empty_mask_rate']:.1%}")
    fine = metrics.get("fine_vs_parent") or {}
    if fine.get("turns"):
        parts.append(f"fine targets: IoU {fine['target_iou']:.3f} with the target, "
                     f"{fine['parent_iou']:.3f} with its object")
    asked = {k: v for k, v in (metrics.get("focus_phrases") or {}).items() if isinstance(v, dict) and v["asked"]}
    if asked:
        parts.append("named right: " + ", ".join(f"{k} {v['correct']}/{v['asked']}" for k, v in asked.items()))
    if metrics.get("skipped"):
        parts.append(f"{len(metrics['skipped'])} skipped")
    return "; ".join(parts) + f" → {out}"


if __name__ == "__main__":
    raise SystemExit(main())
