"""Per-GPU memory of a training config for each strategy and precision, before renting GPUs.

    pixelagent recipe plan-memory --config miras_7b/stage1 --gpus 2 --gpu-memory 48GiB
    pixelagent recipe plan-memory --config miras_7b/stage2 --gpus 8 --gpu-memory 80GB --json
    pixelagent recipe plan-memory --config lisa_7b/stage1 --gpus 2 optim.micro_batch_size=4

The config's model is built on the meta device with random-init parts (nothing is downloaded
or allocated), its parameters are counted by what trains, and one micro-batch
(``optim.micro_batch_size`` samples of ``--text-tokens`` dialogue tokens plus the visual
tokens) runs forward and backward there while every tensor saved for the backward pass is
counted. The table gives, per GPU, the weights, gradients, AdamW state and activations, the
total with the CUDA context and allocator slack (see ``pixelagent.training.memory``), and
whether it fits ``--gpu-memory``. It is a plan, not a measurement: check it with
``recipes/bench_full_size.py`` on the card.
"""

from __future__ import annotations

import argparse
import json
import sys

from pixelagent.training.config import load_config, shipped_configs
from pixelagent.training.memory import PRECISIONS, STRATEGIES, human_bytes, measure, parse_bytes, plan
from pixelagent.arguments import positive_int


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="pixelagent recipe plan-memory", description=__doc__.splitlines()[0],
                                     epilog="shipped configs: " + ", ".join(shipped_configs()))
    parser.add_argument("--config", required=True, help="a shipped config name (miras_7b/stage1) or a YAML path")
    parser.add_argument("--gpus", type=positive_int, default=1, help="GPUs the run would use (default 1)")
    parser.add_argument("--gpu-memory", type=parse_bytes, default=None,
                        help="memory of one card, e.g. 48GiB or 80GB: says whether each plan fits")
    parser.add_argument("--text-tokens", type=positive_int, default=512,
                        help="dialogue tokens per sample, visual tokens excluded (default 512)")
    parser.add_argument("--strategy", choices=STRATEGIES, action="append",
                        help="only these strategies (repeatable; default all)")
    parser.add_argument("--precision", choices=PRECISIONS, action="append",
                        help="only these precisions (repeatable; default all)")
    parser.add_argument("--gradient-checkpointing", choices=["config", "on", "off", "both"], default="both",
                        help="plan with LLM gradient checkpointing on, off, both (default) or as the config says")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    config = load_config(args.config, args.overrides)
    checkpointing = {"on": [True], "off": [False], "both": [False, True],
                     "config": [bool(getattr(config.optim, "gradient_checkpointing", False))]}[args.gradient_checkpointing]
    rows = []
    precisions = args.precision or PRECISIONS
    for ckpt in checkpointing:
        # activations counted once in 16-bit and, when fp32 is asked for, once in float32
        footprints = {dtype: measure(config, text_tokens=args.text_tokens, gradient_checkpointing=ckpt, dtype=dtype)
                      for dtype in (["float32"] if "fp32" in precisions else []) + (
                          ["bfloat16"] if set(precisions) - {"fp32"} else [])}
        for strategy in args.strategy or STRATEGIES:
            for precision in precisions:
                footprint = footprints["float32" if precision == "fp32" else "bfloat16"]
                gpu = plan(footprint, args.gpus, strategy, precision, args.gpu_memory)
                rows.append({**gpu.to_dict(), "gradient_checkpointing": ckpt,
                             "micro_batch": footprint.micro_batch, "tokens_per_sample": footprint.tokens,
                             "frozen_parameters": footprint.frozen, "trainable_parameters": footprint.trainable})
    if args.json:
        print(json.dumps({"config": args.config, "gpus": args.gpus, "gpu_memory": args.gpu_memory,
                          "text_tokens": args.text_tokens, "plans": rows}, indent=2))
        return 0
    first = rows[0]
    print(f"{args.config}: {first['frozen_parameters'] / 1e6:,.0f} M frozen + {first['trainable_parameters'] / 1e6:,.1f} M "
          f"trainable parameters; micro-batch {first['micro_batch']} x {first['tokens_per_sample']} tokens; "
          f"{args.gpus} GPU(s)" + (f" of {human_bytes(args.gpu_memory)}" if args.gpu_memory else ""))
    header = f"{'strategy':9}{'precision':12}{'ckpt':6}{'weights':>11}{'grads':>11}{'optimizer':>11}{'activ.':>11}{'total':>11}  fits"
    print(header)
    for row in rows:
        fits = "-" if row["fits"] is None else ("yes" if row["fits"] else "NO")
        print(f"{row['strategy']:9}{row['precision']:12}{'on' if row['gradient_checkpointing'] else 'off':6}"
              + "".join(f"{human_bytes(row[k]):>11}" for k in ("weights", "gradients", "optimizer", "activations", "total"))
              + f"  {fits}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
