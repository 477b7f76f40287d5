"""One decode step and whole dialogues with the lean decode step against transformers' forward (same run).

    python recipes/bench_decode_step.py [--preset miras-tiny] [--rows 1 8] [--past 300] [--rounds 3]

"step": the language model's decode step for ``--rows`` rows after ``--past`` cached positions
(rows of more than one have their first positions padded, as the batched decoding pads them):
transformers' ``LlamaModel.forward`` against :mod:`pixelagent_llava.lean_step`, with the
states checked bit-identical. "dialogues": the demo scenes' turns, one session after another, on
an agent with ``lean_decode`` off and one with it on (the default), answers checked identical.
Medians over ``--rounds``; the ratios are what to read (this machine is noisy).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

from pixelagent.arguments import positive_int
from pixelagent.errors import InputError

MAX_ROWS = 64  # the batched decoding takes at most 16 rows by default; beyond this is only memory


def step_times(backbone, rows: int, past: int, repeats: int) -> dict:
    """ms per decode step, transformers against lean, and whether the states are identical."""
    import torch
    from transformers import DynamicCache

    width = backbone.hidden_size
    generator = torch.Generator().manual_seed(rows)
    cache = DynamicCache()
    with torch.no_grad():
        backbone._step(torch.randn(rows, past, width, generator=generator), None, None, cache, None)
    embeds = torch.randn(rows, 1, width, generator=generator)
    attention = positions = None
    if rows > 1:
        attention = torch.ones(rows, past + 1, dtype=torch.long)
        attention[1:, : past // 10] = 0  # every row but the first starts with pads
        positions = torch.full((rows, 1), past)
    lean = backbone._lean_decoder()
    if lean is None:
        raise SystemExit("this preset's language model cannot take the lean step (see pixelagent_llava.lean_step)")
    model = backbone.language_model
    from pixelagent_llava.backbone import _CACHE_ARG

    def transformers_step():
        extra = {} if attention is None else {"attention_mask": attention, "position_ids": positions}
        states = model(inputs_embeds=embeds, use_cache=True, **{_CACHE_ARG: cache}, **extra).last_hidden_state[:, -1]
        cache.crop(-1)  # transformers 5: a negative count of positions to remove
        return states

    def lean_step():
        states = lean.step(embeds, attention, positions, cache)
        cache.crop(-1)
        return states

    def timed(step) -> float:
        for _ in range(5):
            step()
        started = time.perf_counter()
        for _ in range(repeats):
            step()
        return (time.perf_counter() - started) / repeats * 1000

    with torch.no_grad():
        identical = torch.equal(transformers_step(), lean_step())
        times = [(timed(transformers_step), timed(lean_step)) for _ in range(3)]
    hf, ours = statistics.median(t[0] for t in times), statistics.median(t[1] for t in times)
    return {"rows": rows, "past": past, "transformers_ms": hf, "lean_ms": ours, "ratio": hf / ours,
            "identical": identical}


def dialogues(agent, scenes) -> tuple[float, list[str]]:
    """Seconds for every scene's turns, one session after another, and the answers."""
    answers = []
    started = time.perf_counter()
    for scene in scenes:
        session = agent.session(scene.image)
        answers.extend(session.ask(question).raw_text for question in scene.requests)
    return time.perf_counter() - started, answers


def main(argv: list[str] | None = None) -> int:
    from pixelagent import Agent
    from pixelagent.demo import demo_scenes

    parser = argparse.ArgumentParser(prog="pixelagent recipe bench-decode-step", description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="miras-tiny")
    parser.add_argument("--rows", type=positive_int, nargs="+", default=[1, 8])
    parser.add_argument("--past", type=positive_int, default=300, help="cached positions before the step")
    parser.add_argument("--steps", type=positive_int, default=200, help="steps per timing")
    parser.add_argument("--scenes", type=positive_int, default=8)
    parser.add_argument("--rounds", type=positive_int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    lean = Agent(args.preset, device="cpu")
    window = lean.parts["llm"].context_window
    if args.past >= window:
        raise InputError(f"--past {args.past} leaves no room for a step in {args.preset}'s {window}-position "
                         f"context window; use at most {window - 1}")
    if max(args.rows) > MAX_ROWS:
        raise InputError(f"--rows {max(args.rows)} is more than a batch ever holds; use at most {MAX_ROWS}")
    plain = Agent(args.preset, device="cpu", llm={"settings": {"lean_decode": False}})
    steps = [step_times(lean.parts["llm"], rows, args.past, args.steps) for rows in args.rows]
    scenes = demo_scenes(args.scenes)
    turns = sum(len(s.requests) for s in scenes)
    for agent in (lean, plain):  # warm-up
        dialogues(agent, scenes[:1])
    rounds, same = [], True
    for _ in range(args.rounds):
        slow, expected = dialogues(plain, scenes)
        fast, got = dialogues(lean, scenes)
        same = same and got == expected
        rounds.append((turns / slow, turns / fast))
    report = {"preset": args.preset, "steps": steps, "turns_per_round": turns,
              "transformers_turns_per_s": statistics.median(r[0] for r in rounds),
              "lean_turns_per_s": statistics.median(r[1] for r in rounds),
              "turns_ratio": statistics.median(r[1] / r[0] for r in rounds),
              "answers_identical": same, "states_identical": all(s["identical"] for s in steps)}
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for s in steps:
            print(f"decode step, {s['rows']} row(s) after {s['past']} positions: transformers {s['transformers_ms']:.2f} ms, "
                  f"lean {s['lean_ms']:.2f} ms ({s['ratio']:.2f}x); states identical: {s['identical']}")
        print(f"{turns} turns one session after another, {args.preset}: transformers "
              f"{report['transformers_turns_per_s']:.1f} turns/s, lean {report['lean_turns_per_s']:.1f} turns/s "
              f"({report['turns_ratio']:.2f}x); answers identical: {same}")
    return 0 if same and report["states_identical"] else 1


if __name__ == "__main__":
    sys.exit(main())
