"""Per-turn latency of a session with per-image caching vs re-encoding the image every turn.

    python recipes/bench_session_latency.py [--presets miras-tiny lisa-tiny] [--turns 8] [--repeats 3]
    python recipes/bench_session_latency.py --presets miras-tiny --sam-size vit_b --repeats 1

For each preset, one session asks ``--turns`` questions. "cached" is pixelagent's session: the
visual tokens and SAM's image embedding are computed once, and the dialogue's key/value cache
is reused, so a turn only runs its own tokens. "re-encode" drops all of that before every turn
(``Session.forget_caches``), as LISA and GLaMM do: both image encoders run again and the whole
dialogue is prefilled again. Both modes generate the same tokens (greedy), so the
difference is the caching alone. The tiny model is first trained for a few steps to answer every
question with a target, so that every turn runs the mask decoder as a segmenting turn does. Figures are medians over ``--repeats`` runs, in milliseconds,
measured in one process; the ratio is what to read (this machine is noisy).

At the tiny sizes the encoders are so small that a turn is mostly decoding; ``--sam-size``
puts a real SAM image encoder (random weights) into the preset to show the per-image cost at
realistic scale, and ``--full-encoders`` the preset's full-size visual encoder too (random
weights from configs: CLIP-L/14 at 336 px, and ConvNeXt-L at 768 px for MIRAS), with the tiny
LLM: what caching buys a full-size model, less its LLM's share. The frozen encoders' outputs are
cached while the model learns to segment, so only the measured turns pay for them.

    python recipes/bench_session_latency.py --presets miras-tiny --full-encoders --sam-size vit_h --repeats 1
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import torch

from pixelagent import Agent
from pixelagent.nn.model import SegmentationModel, SegSample
from pixelagent.registry import get_registry
from pixelagent.arguments import positive_int

QUESTIONS = ["What is in this picture?", "What is the biggest object?", "What colour is it?",
             "Is there a label on it?", "What does the label say?", "Where is the word?",
             "Can you segment the word?", "And the whole label?"]


def scene(seed: int = 0, size: int = 128) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 255, size=(size, size, 3), dtype=np.uint8)


def segmenting_agent(preset_name: str, overrides: dict, steps: int, cache_dir: str | None = None) -> Agent:
    """A model trained for ``steps`` steps to answer every question with ``[OBJ]the box[SEG]``.

    Random weights never emit ``[SEG]``, and a turn without a target never runs the mask
    decoder, so an untrained model would hide exactly the per-image cost being measured.
    """
    registry = get_registry()
    preset = registry.preset(preset_name).preset.with_overrides(device="cpu", **overrides)
    model = SegmentationModel(registry.build(preset), preset)
    if cache_dir is not None:  # full-size frozen encoders: computed once for the one training image
        model.use_feature_cache(cache_dir)
    image = scene()
    mask = np.zeros((1, *image.shape[:2]), dtype=bool)
    mask[0, 32:96, 40:100] = True
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=3e-3)
    model.train()
    for step in range(steps):
        question = QUESTIONS[step % len(QUESTIONS)]
        loss = model([SegSample(image, [(question, "It is [OBJ]the box[SEG].")], mask)]).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return Agent.from_parts(preset, model.eval().parts)


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


def run(preset: str, turns: int, repeats: int, new_tokens: int, sam_size: str | None, steps: int,
        full_encoders: bool = False) -> None:
    import tempfile

    overrides = {"llm": {"settings": {"max_new_tokens": new_tokens}}}
    label = preset
    if sam_size:  # a real-size (random-weight) SAM image encoder: encoding costs what it costs
        overrides["mask_decoder"] = {"settings": {"size": sam_size, "random_init": True}}
        label = f"{preset} with SAM {sam_size}"
    if full_encoders:
        overrides["visual_encoder"] = {"settings": {"tiny": False, "random_init": True}}
        # 576 visual tokens do not fit the 448 positions miras-tiny keeps: the tiny LLM's own 4096
        overrides["llm"]["settings"]["context_window"] = None
        label += " and its full-size visual encoder"
    with tempfile.TemporaryDirectory() as cache:
        agent = segmenting_agent(preset, overrides, steps, cache if (full_encoders or sam_size) else None)
    turn_times(agent, 2, False)  # warm-up: first-call allocations, lazy imports
    cached = np.median([turn_times(agent, turns, False) for _ in range(repeats)], axis=0)
    fresh = np.median([turn_times(agent, turns, True) for _ in range(repeats)], axis=0)
    probe = agent.session(scene()).ask(QUESTIONS[0])
    print(f"\n{label}: per-turn latency (ms, median of {repeats}); a turn answers {probe.raw_text!r}")
    print(f"{'turn':>4} {'cached':>9} {'re-encode':>10} {'ratio':>6}")
    for index, (c, f) in enumerate(zip(cached, fresh), start=1):
        print(f"{index:>4} {c:>9.1f} {f:>10.1f} {f / c:>6.2f}")
    growth = cached[-1] / statistics.mean(cached[1:3])
    print(f"cached turn {turns} / mean(turns 2-3) = {growth:.2f} (1.0 = flat); "
          f"re-encode / cached at turn {turns} = {fresh[-1] / cached[-1]:.2f}; "
          f"all {turns} turns: re-encode / cached = {sum(fresh) / sum(cached):.2f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pixelagent recipe bench-session-latency", description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["miras-tiny", "lisa-tiny"])
    parser.add_argument("--turns", type=positive_int, default=8)
    parser.add_argument("--repeats", type=positive_int, default=3)
    parser.add_argument("--new-tokens", type=positive_int, default=16, help="generation cap per turn")
    parser.add_argument("--train-steps", type=positive_int, default=40, help="steps teaching it to segment")
    parser.add_argument("--sam-size", choices=["vit_b", "vit_l", "vit_h"], default=None,
                        help="swap in a full-size, random-weight SAM image encoder (slow on CPU)")
    parser.add_argument("--full-encoders", action="store_true",
                        help="the preset's full-size visual encoder with random weights (slow on CPU)")
    args = parser.parse_args(argv)
    for preset in args.presets:
        run(preset, args.turns, args.repeats, args.new_tokens, args.sam_size, args.train_steps, args.full_encoders)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
