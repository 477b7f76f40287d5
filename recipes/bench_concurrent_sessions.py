"""Turns/s of N sessions asked from N threads at once against one session after another (same run).

    python recipes/bench_concurrent_sessions.py [--preset miras-tiny] [--sessions 8] [--rounds 3]

Each session talks about its own PRIST-Synth demo scene (object, part, word, another object).
"sequential" runs the sessions one after another in one thread; "concurrent" runs them all at
once, one thread each, so their turns share the LLM's decode steps, SAM's mask decoding and the
image encoding (``pixelagent.batching``). Both give the same answers (checked); the ratio of
turns/s is what to read (this machine is noisy, so the figure is the median of ``--rounds``).

The ratio is also printed as the product it is: ``ratio = (CPU ms per turn alone / CPU ms per
turn together) x (cores busy together / cores busy alone)``, i.e. what batching saved in work
times how much more of the machine the concurrent turns kept busy. Both are process CPU time
(all threads) over wall time, so on N cores the second factor is at most N.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pixelagent.arguments import positive_int


def dialogue(agent, scene, out: list) -> None:
    session = agent.session(scene.image)
    out.extend(session.ask(question).raw_text for question in scene.requests)


def main(argv: list[str] | None = None) -> int:
    from pixelagent import Agent
    from pixelagent.demo import demo_scenes

    parser = argparse.ArgumentParser(prog="pixelagent recipe bench-concurrent-sessions",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="miras-tiny")
    parser.add_argument("--sessions", type=positive_int, default=8)
    parser.add_argument("--rounds", type=positive_int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    agent = Agent(args.preset, device="cpu")
    scenes = demo_scenes(args.sessions)
    turns = sum(len(s.requests) for s in scenes)
    dialogue(agent, scenes[0], [])  # warm-up
    ratios, rates, cores, passes, same = [], [], [], [], True
    cpu_alone, cpu_together, cores_alone = [], [], []
    batcher = getattr(agent.parts["llm"], "_batcher", None)
    for _ in range(args.rounds):
        alone = [[] for _ in scenes]
        started, cpu = time.perf_counter(), time.process_time()
        for scene, out in zip(scenes, alone):
            dialogue(agent, scene, out)
        wall, spent = time.perf_counter() - started, time.process_time() - cpu
        sequential = turns / wall
        cpu_alone.append(spent / turns)
        cores_alone.append(spent / wall)
        together = [[] for _ in scenes]
        threads = [threading.Thread(target=dialogue, args=(agent, s, o)) for s, o in zip(scenes, together)]
        if batcher is not None:
            batcher.step_rows.clear()  # count the concurrent passes only
        started, cpu = time.perf_counter(), time.process_time()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall, spent = time.perf_counter() - started, time.process_time() - cpu
        concurrent = turns / wall
        cores.append(spent / wall)
        cpu_together.append(spent / turns)
        passes.extend(batcher.step_rows if batcher is not None else [])
        same = same and together == alone
        rates.append((sequential, concurrent))
        ratios.append(concurrent / sequential)
    report = {"preset": args.preset, "sessions": args.sessions, "turns_per_round": turns,
              "sequential_turns_per_s": statistics.median(r[0] for r in rates),
              "concurrent_turns_per_s": statistics.median(r[1] for r in rates),
              "ratio": statistics.median(ratios), "ratios": ratios, "answers_identical": same,
              # CPU seconds per wall second while concurrent: how many cores the turns kept busy
              "cores_busy": statistics.median(cores),
              "cores_busy_sequential": statistics.median(cores_alone),
              # process CPU ms per turn, one session after another and all together
              "cpu_ms_per_turn_sequential": 1000 * statistics.median(cpu_alone),
              "cpu_ms_per_turn_concurrent": 1000 * statistics.median(cpu_together),
              # rows in the LLM's batched forward passes (prefills and decode steps), mean
              "llm_rows_per_pass": statistics.mean(passes) if passes else None}
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"{args.sessions} sessions x {turns // args.sessions} turns, {args.preset}, {agent.threads or 'default'} "
              f"torch thread(s): sequential {report['sequential_turns_per_s']:.1f} turns/s, concurrent "
              f"{report['concurrent_turns_per_s']:.1f} turns/s, ratio {report['ratio']:.2f} "
              f"(rounds: {', '.join(f'{r:.2f}' for r in ratios)}); {report['llm_rows_per_pass'] or 0:.1f} rows "
              f"per LLM pass; answers identical: {same}")
        saved = report["cpu_ms_per_turn_sequential"] / report["cpu_ms_per_turn_concurrent"]
        busier = report["cores_busy"] / report["cores_busy_sequential"]
        equals = "=" if args.rounds == 1 else "~"  # medians of the factors, not of their product
        print(f"  {equals} CPU per turn {report['cpu_ms_per_turn_sequential']:.1f} ms alone / "
              f"{report['cpu_ms_per_turn_concurrent']:.1f} ms together ({saved:.2f}x less work) x cores busy "
              f"{report['cores_busy']:.2f} together / {report['cores_busy_sequential']:.2f} alone ({busier:.2f}x)")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
