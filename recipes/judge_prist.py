"""Judge the reasoning quality of an evaluated model with an LLM (paper Table 4: PR, LC, CC, TR, Win Rate).

    pixelagent recipe judge-prist --eval EVAL_DIR --data DIR|test.json [--split test] [--images DIR]
        [--out EVAL_DIR/judge] [--model gpt-4o] [--base-url URL] [--repeats 5] [--concurrency 4]
        [--temperature T] [--prompt FILE] [--protocol pixelagent|paper] [--limit N] [--no-image]
        [--reference-predictions FILE] [--no-win-rate]

The model's dialogues are the split's questions with the answers ``eval-prist`` generated
(``EVAL_DIR/predictions.jsonl``); the reference dialogues are the split's own (or, with
``--reference-predictions``, the answers of another predictions file: the paper compares with
three human experts' answers to 100 test dialogues, which are not published). Each dialogue is
scored ``--repeats`` times (5, as the paper) with the Figure 8 judge prompt (ours, or your own
``--prompt`` file, which must contain ``{{dialogue}}``), the image attached (``--no-image``:
none). A dialogue whose image is missing is listed and skipped.

Resumable like ``data generate``: every judged dialogue is appended to ``OUT/judge.jsonl`` as it
finishes; a rerun judges only what is missing or failed. A dialogue the judge cannot score is
recorded there with its error and left out of the means; scores outside 0-5 are clamped and
flagged. ``OUT/judge.json`` holds the means, the Win Rate, and the counts (scored, failed,
flagged, skipped); ``OUT/table4.md`` the paper's Table 4 layout. The run exits 1 while any
dialogue failed, saying to rerun.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from pixelagent.arguments import positive_int

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import eval_prist  # noqa: E402  (a sibling recipe, not a library module)

from pixelagent.errors import ConfigError, LLMError  # noqa: E402
from pixelagent.eval.judge import compare  # noqa: E402
from pixelagent.files import make_output_folder  # noqa: E402
from pixelagent.eval.judge_run import JudgeItem, read_scores, run_judge, scores_for  # noqa: E402
from pixelagent.markup import render_plain  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="pixelagent recipe judge-prist", description=__doc__.splitlines()[0])
    parser.add_argument("--eval", type=Path, required=True, help="an eval-prist output folder (predictions.jsonl)")
    parser.add_argument("--data", type=Path, required=True, help="the data eval-prist ran on")
    parser.add_argument("--split", default="test", choices=["train", "val", "test"])
    parser.add_argument("--images", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--model", default="gpt-4o", help="the judge model at the endpoint")
    parser.add_argument("--base-url", default=None, help="OpenAI-compatible endpoint (default $OPENAI_BASE_URL)")
    parser.add_argument("--repeats", type=positive_int, default=5)
    parser.add_argument("--concurrency", type=positive_int, default=4)
    parser.add_argument("--temperature", type=float, default=None)
    parser.add_argument("--prompt", type=Path, default=None, help="your own Figure 8 judge prompt file")
    parser.add_argument("--protocol", default="pixelagent", choices=["pixelagent", "paper"],
                        help="paper: the judge sees the conversation and image only; pixelagent: the focus too")
    parser.add_argument("--limit", type=positive_int, default=None)
    parser.add_argument("--no-image", action="store_true", help="judge without the images")
    parser.add_argument("--reference-predictions", type=Path, default=None,
                        help="a predictions.jsonl whose answers are the reference side (e.g. human answers)")
    parser.add_argument("--no-win-rate", action="store_true", help="judge the model's dialogues only")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from pixelagent.data.prompts import load_prompt
    from pixelagent.llm import ChatClient

    template = load_prompt("judge", args.prompt)  # checked before anything is sent
    source = eval_prist.load_source(argparse.Namespace(data=args.data, split=args.split, images=args.images,
                                                       annotations=None, exact_labels=False, limit=args.limit))
    predictions = _predictions(args.eval / "predictions.jsonl", "--eval")
    references = None if args.reference_predictions is None else _predictions(args.reference_predictions,
                                                                               "--reference-predictions")
    items, skipped = build_items(source, predictions, references, with_image=not args.no_image,
                                 win_rate=not args.no_win_rate)
    out = make_output_folder(args.out or args.eval / "judge", "--out folder")
    for item in skipped:
        print(f"skipped {item['id']}: {item['reason']}", file=sys.stderr)
    client = ChatClient(base_url=args.base_url, model=args.model, max_concurrency=args.concurrency)
    report = run_judge(client, items, out / "judge.jsonl", repeats=args.repeats, prompt=template,
                       protocol=args.protocol, temperature=args.temperature, concurrency=args.concurrency)
    summary = summarise(out / "judge.jsonl", items, skipped, report, args, template.source)
    (out / "judge.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "table4.md").write_text(table4(summary, args.eval.name))
    print(summary_line(summary, out))
    if summary["failed"]:
        raise LLMError(f"{summary['failed']} dialogue(s) could not be judged (errors in {out / 'judge.jsonl'}); "
                       "rerun the same command to retry them")
    return 0


def _predictions(path: Path, flag: str) -> dict[str, dict]:
    if not path.is_file():
        raise ConfigError(f"{flag}: {path} does not exist; run eval-prist first (or check the path)")
    return eval_prist.read_predictions(path)


def build_items(source, predictions: dict[str, dict], references: dict[str, dict] | None, *,
                with_image: bool = True, win_rate: bool = True) -> tuple[list[JudgeItem], list[dict]]:
    """The judge items (``model:<id>`` and ``reference:<id>``) and the dialogues skipped."""
    items, skipped = [], []
    for record in source.records:
        prediction = predictions.get(record.id)
        reference = record.messages if references is None else None
        if prediction is None or (references is not None and record.id not in references):
            skipped.append({"id": record.id, "reason": "no prediction for it"})
            continue
        image = None
        if with_image:
            path = source.image_path(record)
            if not path.exists():
                skipped.append({"id": record.id, "reason": f"image {path} does not exist (or pass --no-image)"})
                continue
            image = str(path)
        model = _dialogue(record, prediction["answers"])
        items.append(JudgeItem(key=f"model:{record.id}", dialogue=model, focus=record.focus, image=image))
        if win_rate:
            ref = ([{"role": m.role, "text": render_plain(m.text)} for m in reference] if reference is not None
                   else _dialogue(record, references[record.id]["answers"]))
            items.append(JudgeItem(key=f"reference:{record.id}", dialogue=ref, focus=record.focus, image=image))
    return items, skipped


def _dialogue(record, answers: list[str]) -> list[dict]:
    messages = []
    for (question, _), answer in zip(record.turns, answers):
        messages += [{"role": "user", "text": question}, {"role": "assistant", "text": render_plain(answer)}]
    return messages


def summarise(path: Path, items: list[JudgeItem], skipped: list[dict], report, args, prompt_source: str) -> dict:
    """Means per side over the dialogues scored, the Win Rate over the pairs scored on both."""
    found, _ = read_scores(path)
    sides = {side: [i.key for i in items if i.key.startswith(f"{side}:")] for side in ("model", "reference")}
    summary = {"judge": args.model, "repeats": args.repeats, "protocol": args.protocol, "prompt": prompt_source,
               "with_image": not args.no_image, "dialogues": len(sides["model"]), "skipped": skipped,
               "scored": sum(1 for i in items if not isinstance(found.get(i.key), (str, type(None)))),
               "failed": sum(1 for i in items if isinstance(found.get(i.key), str) or i.key not in found),
               "flagged_runs": sum(sum(bool(r.flags) for r in v.runs) for k, v in found.items()
                                   if not isinstance(v, str) and k in {i.key for i in items}),
               "this_run": report.model_dump(mode="json")}
    scores = {}
    for side, keys in sides.items():
        if keys:
            try:
                scores[side] = scores_for(path, keys)
            except LLMError:
                scores[side] = None
    for side, value in scores.items():
        summary[side] = None if value is None else {**value.as_dict(), "mean": value.mean, "scored": value.scored}
    if scores.get("model") is not None and scores.get("reference") is not None:
        try:
            result = compare(scores["model"], scores["reference"])
            summary["win_rate"] = {"win_rate": result.win_rate, "wins": result.wins, "ties": result.ties,
                                   "losses": result.losses, "skipped": result.skipped}
        except LLMError:
            summary["win_rate"] = None
    return summary


def table4(summary: dict, model: str) -> str:
    lines = ["| Model | PR | LC | CC | TR | Win Rate(%) |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    win = (summary.get("win_rate") or {}).get("win_rate")
    for name, side in ((model, summary.get("model")), ("reference", summary.get("reference"))):
        if side:
            rate = f"{win:.1f}" if name == model and win is not None else "–"
            lines.append(f"| {name} | {side['PR']:.2f} | {side['LC']:.2f} | {side['CC']:.2f} | {side['TR']:.2f} | {rate} |")
    note = (f"\nJudge {summary['judge']}, {summary['repeats']} scorings per dialogue, protocol {summary['protocol']}, "
            f"prompt {summary['prompt']}; {summary['scored']} dialogues scored, {summary['failed']} failed, "
            f"{summary['flagged_runs']} scorings flagged (out-of-range or inconsistent scores), "
            f"{len(summary['skipped'])} skipped.\n")
    return "\n".join(lines) + "\n" + note


def summary_line(summary: dict, out: Path) -> str:
    parts = [f"{summary['scored']} dialogues judged, {summary['failed']} failed, "
             f"{summary['flagged_runs']} scorings flagged"]
    if summary.get("model"):
        model = summary["model"]
        parts.append(f"model PR {model['PR']:.2f} LC {model['LC']:.2f} CC {model['CC']:.2f} TR {model['TR']:.2f}")
    if summary.get("win_rate"):
        parts.append(f"Win Rate {summary['win_rate']['win_rate']:.1f} %")
    return "; ".join(parts) + f" → {out}"


if __name__ == "__main__":
    raise SystemExit(main())
