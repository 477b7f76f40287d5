"""Per-turn latency of full-size MIRAS in bf16 on a GPU against the decode-bound limit.

    python recipes/bench_gpu_latency.py                       # CUDA: random-weight full-size MIRAS, bf16
    python recipes/bench_gpu_latency.py --compile --kv-cache static --new-tokens 64
    python recipes/bench_gpu_latency.py --tiny                # the same code at tiny size on the CPU

An 8-turn dialogue about one image, every part full size with random weights built from configs
(CLIP-L/14-336 + ConvNeXt-L/768, LLaVA-v1.6-vicuna-7B, SAM ViT-H; nothing downloaded). Printed:
the image encode time (both encoders and SAM's image encoder, once per session), per turn the
prefill time and the decode milliseconds per token, and the decode-bound limit: a decode step
must read every LLM weight once, so it cannot beat ``weight bytes / memory bandwidth`` (the card's
bandwidth from a table of common cards, or ``--bandwidth-gbs``). The goal is a decode step
within 2x that limit. Random weights answer nonsense; each turn decodes ``--new-tokens`` tokens.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pixelagent.arguments import positive_int

#: Memory bandwidth (GB/s) by a substring of torch.cuda.get_device_name().
BANDWIDTH_GBS = {"H200": 4800.0, "H100 NVL": 3900.0, "H100 PCIe": 2000.0, "H100": 3350.0, "A100-SXM4-80GB": 2039.0,
                 "A100 80GB PCIe": 1935.0, "A100": 1555.0, "A6000": 768.0, "L40S": 864.0, "A10G": 600.0,
                 "4090": 1008.0, "3090": 936.0}
QUESTIONS = ["What is in this picture?", "What is the biggest object?", "What colour is it?",
             "Is there a label on it?", "What does the label say?", "Where is the word?",
             "Can you segment the word?", "And the whole label?"]


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="pixelagent recipe bench-gpu-latency", description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=positive_int, default=8)
    parser.add_argument("--new-tokens", type=positive_int, default=32, help="tokens decoded per turn")
    parser.add_argument("--kv-cache", choices=["dynamic", "static"], default="dynamic")
    parser.add_argument("--compile", action="store_true", help="torch.compile the decode step")
    parser.add_argument("--bandwidth-gbs", type=float, default=None)
    parser.add_argument("--tiny", action="store_true", help="miras-tiny on the CPU (a check of this script)")
    parser.add_argument("--json", action="store_true")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    import numpy as np
    import torch

    from pixelagent import Agent

    args = parse_args(argv)
    if not args.tiny and not torch.cuda.is_available():
        print("error: bench-gpu-latency needs a CUDA GPU (use --tiny for the CPU check of the script)", file=sys.stderr)
        return 1
    llm = {"settings": {"max_new_tokens": args.new_tokens, "kv_cache": args.kv_cache, "compile": args.compile,
                        "context_window": None}}
    if args.tiny:
        agent = Agent("miras-tiny", device="cpu", llm=llm)
    else:
        agent = Agent("miras", device="cuda", dtype="bfloat16",
                      visual_encoder={"settings": {"random_init": True}},
                      llm={"settings": {**llm["settings"], "random_init": True}},
                      mask_decoder={"settings": {"random_init": True, "checkpoint": None}})
    backbone = agent.parts["llm"]
    sync = torch.cuda.synchronize if torch.cuda.is_available() and not args.tiny else (lambda: None)
    steps: list[tuple[int, float]] = []  # (tokens fed, seconds) of every forward of the LLM
    original = backbone._step

    def timed(embeds, attention, positions, cache, last=None):
        sync()
        started = time.perf_counter()
        out = original(embeds, attention, positions, cache, last)
        sync()
        steps.append((embeds.shape[1], time.perf_counter() - started))
        return out

    backbone._step = timed
    image = np.random.default_rng(0).integers(0, 255, size=(768, 1024, 3), dtype=np.uint8)
    session = agent.session(image)
    sync()
    started = time.perf_counter()
    session.visual_features()
    session.image_embedding()
    sync()
    encode_s = time.perf_counter() - started
    turns = []
    for question in QUESTIONS[:args.turns] * (1 + args.turns // len(QUESTIONS)):
        if len(turns) == args.turns:
            break
        steps.clear()
        started = time.perf_counter()
        session.ask(question)
        total = time.perf_counter() - started
        prefill = sum(s for n, s in steps if n > 1)
        decode = [s for n, s in steps if n == 1]
        turns.append({"turn": len(turns) + 1, "prefill_ms": 1000 * prefill, "tokens": len(decode),
                      "ms_per_token": 1000 * statistics.median(decode) if decode else None, "turn_ms": 1000 * total})
    weights = sum(p.numel() * p.element_size() for p in backbone.parameters())
    bandwidth = args.bandwidth_gbs or _bandwidth(args.tiny)
    limit_ms = None if bandwidth is None else 1000 * weights / (bandwidth * 1e9)
    per_token = statistics.median(t["ms_per_token"] for t in turns if t["ms_per_token"] is not None)
    report = {"device": "CPU (tiny)" if args.tiny else torch.cuda.get_device_name(), "encode_ms": 1000 * encode_s,
              "turns": turns, "llm_weight_bytes": weights, "bandwidth_gbs": bandwidth,
              "decode_bound_ms_per_token": limit_ms, "ms_per_token": per_token,
              "ratio_to_bound": None if limit_ms is None else per_token / limit_ms,
              "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None}
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{report['device']}: image encode {report['encode_ms']:.0f} ms (once per session)")
    for turn in turns:
        print(f"  turn {turn['turn']}: prefill {turn['prefill_ms']:.1f} ms, {turn['tokens']} tokens at "
              f"{turn['ms_per_token'] or 0:.2f} ms/token, {turn['turn_ms']:.0f} ms in all")
    if limit_ms is not None:
        print(f"decode: {per_token:.2f} ms/token against the decode-bound {limit_ms:.2f} ms "
              f"({weights / 2**30:.1f} GiB of LLM weights / {bandwidth:.0f} GB/s): {per_token / limit_ms:.2f}x (goal <= 2x)")
    return 0


def _bandwidth(tiny: bool) -> float | None:
    import torch

    if tiny or not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    return next((v for k, v in BANDWIDTH_GBS.items() if k in name), None)


if __name__ == "__main__":
    sys.exit(main())
