"""Per-turn latency of a session with per-image caching vs re-encoding the image every turn.

    python recipes/bench_session_latency.py [--presets miras-tiny lisa-tiny] [--turns 8] [--repeats 3]

For each preset, one session asks ``--turns`` questions. "cached" is pixelagent's session: the
visual tokens and SAM's image embedding are computed once, and the dialogue's key/value cache
is reused, so a turn only runs its own tokens. "re-encode" drops all of that before every turn
(``Session.forget_caches``), as LISA and GLaMM do: both image encoders run again and the whole
dialogue is prefilled again. Both modes generate the same tokens (greedy, fixed length), so the
difference is the caching alone. Figures are medians over ``--repeats`` runs, in milliseconds,
measured in one process; the ratio is what to read (this machine is noisy).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from pixelagent import Agent

QUESTIONS = ["What is in this picture?", "What is the biggest object?", "What colour is it?",
             "Is there a label on it?", "What does the label say?", "Where is the word?",
             "Can you segment the word?", "And the whole label?"]


def scene(seed: int = 0, size: int = 128) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 255, size=(size, size, 3), dtype=np.uint8)


def turn_times(agent: Agent, turns: int, recompute: bool) -> list[float]:
    session = agent.session(scene())
    times = []
    for index in range(turns):
        if recompute:
            session.forget_caches()
        start = time.perf_counter()
        session.ask(QUESTIONS[index % len(QUESTIONS)])
        times.append((time.perf_counter() - start) * 1000)
    return times


def run(preset: str, turns: int, repeats: int, new_tokens: int) -> None:
    # a fixed number of new tokens per turn: random weights never stop early, so both modes
    # generate exactly new_tokens tokens and only the caching differs
    agent = Agent(preset, device="cpu", llm={"settings": {"max_new_tokens": new_tokens}})
    turn_times(agent, 2, False)  # warm-up: first-call allocations, lazy imports
    cached = np.median([turn_times(agent, turns, False) for _ in range(repeats)], axis=0)
    fresh = np.median([turn_times(agent, turns, True) for _ in range(repeats)], axis=0)
    print(f"\n{preset}: per-turn latency (ms, median of {repeats}), {new_tokens} new tokens a turn")
    print(f"{'turn':>4} {'cached':>9} {'re-encode':>10} {'ratio':>6}")
    for index, (c, f) in enumerate(zip(cached, fresh), start=1):
        print(f"{index:>4} {c:>9.1f} {f:>10.1f} {f / c:>6.2f}")
    growth = cached[-1] / statistics.mean(cached[1:3])
    print(f"cached turn {turns} / mean(turns 2-3) = {growth:.2f} (1.0 = flat); "
          f"re-encode / cached at turn {turns} = {fresh[-1] / cached[-1]:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["miras-tiny", "lisa-tiny"])
    parser.add_argument("--turns", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=8)
    args = parser.parse_args()
    for preset in args.presets:
        run(preset, args.turns, args.repeats, args.new_tokens)


if __name__ == "__main__":
    main()
