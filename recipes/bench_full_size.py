"""Full-size MIRAS training steps with random weights: peak GPU memory, step time, tokens/s and MFU.

    python recipes/bench_full_size.py                                  # one CUDA GPU, bf16-mixed, DDP
    python recipes/bench_full_size.py --precision bf16-mixed --gradient-checkpointing --steps 4
    torchrun --nproc_per_node 2 recipes/bench_full_size.py --strategy zero2
    python recipes/bench_full_size.py --tiny --steps 2                  # the same code at tiny size, CPU

For each stage (``miras_7b/stage1`` and ``stage2``) the real training loop runs ``--steps``
optimiser steps on full-size MIRAS built from configs with random weights (LLaVA-v1.6-vicuna-7B,
CLIP-L/14-336, ConvNeXt-L, SAM ViT-H: nothing is downloaded) on PRIST-Synth samples at 1024
px, under the chosen precision and strategy. Printed per stage: peak memory allocated on the
GPU, the median step time after the first (warm-up) step, samples/s, tokens/s (visual + text
positions through the LLM) and the model FLOPs utilisation: model FLOPs per sample (forward and
backward through the LLM, 4·P·T for frozen weights plus 2·P·T for the trainable ones' weight
gradients, and the forward of the frozen vision towers and SAM's image encoder, 2·P·T) times
samples/s, over the card's dense bf16 peak (a table of common cards, or ``--peak-tflops``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from pixelagent.arguments import positive_int

#: Dense bf16 tensor-core peaks, TFLOP/s, by a substring of torch.cuda.get_device_name().
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "A6000": 154.8, "L40S": 362.0, "A10G": 125.0,
               "4090": 165.2, "3090": 71.0, "V100": 125.0}


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="pixelagent recipe bench-full-size", description=__doc__.splitlines()[0])
    parser.add_argument("--stages", nargs="+", default=["stage1", "stage2"])
    parser.add_argument("--steps", type=positive_int, default=3, help="optimiser steps per stage (the first is warm-up)")
    parser.add_argument("--micro-batch", type=positive_int, default=1, help="samples per GPU per forward")
    parser.add_argument("--accumulation", type=positive_int, default=1, help="micro-batches per optimiser step")
    parser.add_argument("--precision", default="bf16-mixed")
    parser.add_argument("--strategy", default="ddp", choices=["ddp", "zero2", "zero3"])
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--peak-tflops", type=float, default=None, help="the card's dense bf16 peak")
    parser.add_argument("--tiny", action="store_true", help="miras_tiny configs on the CPU (a check of this script)")
    parser.add_argument("--json", action="store_true")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    import torch

    from pixelagent.training.distributed import World

    args = parse_args(argv)
    world = World.from_env()
    if not args.tiny and not torch.cuda.is_available():
        print("error: bench-full-size needs a CUDA GPU (use --tiny for the CPU check of the script)", file=sys.stderr)
        return 1
    work = Path(tempfile.mkdtemp(prefix="bench-full-size-"))
    data = _data(work, 256 if args.tiny else 1024, world)
    results = [_stage(args, stage, data, work, world) for stage in args.stages]
    if world.is_main:
        if args.json:
            print(json.dumps({"device": _device_name(args), "results": results}, indent=2))
        else:
            print(f"{_device_name(args)}; precision {args.precision}, strategy {args.strategy}, {world.size} process(es), "
                  f"micro-batch {args.micro_batch}, gradient checkpointing {'on' if args.gradient_checkpointing else 'off'}")
            for r in results:
                print(f"{r['stage']}: peak {r['peak_gib']:.1f} GiB, step {r['step_s']:.2f} s, {r['samples_per_s']:.2f} "
                      f"samples/s, {r['tokens_per_s']:,.0f} tokens/s, MFU {r['mfu']:.1%}" if r["mfu"] is not None else
                      f"{r['stage']}: peak {r['peak_gib']:.1f} GiB, step {r['step_s']:.2f} s, {r['samples_per_s']:.2f} "
                      f"samples/s, {r['tokens_per_s']:,.0f} tokens/s")
    return 0


def _data(work: Path, size: int, world) -> Path:
    from pixelagent.data.synth import SynthConfig, synthesize

    out = work / "data"
    if world.is_main:
        synthesize(out, SynthConfig(n=64, size=size, seed=11, min_turns=2, max_turns=4, splits=(1.0, 0.0, 0.0)))
    else:  # rank 0 writes it; the others wait for its last file
        import time

        while not (out / "train.jsonl").is_file():
            time.sleep(0.5)
        time.sleep(1.0)
    return out


def _stage(args, stage: str, data: Path, work: Path, world) -> dict:
    import torch

    from pixelagent.training.config import load_config
    from pixelagent.training.loop import Trainer
    from pixelagent.training.memory import _meta_preset

    family = "miras_tiny" if args.tiny else "miras_7b"
    batch = args.micro_batch * args.accumulation * world.size
    overrides = [f"output_dir={work / stage}", "init_from=null", f"optim.max_steps={args.steps}",
                 "optim.warmup_steps=1", f"optim.batch_size={batch}", f"optim.micro_batch_size={args.micro_batch}",
                 f"optim.gradient_checkpointing={str(args.gradient_checkpointing).lower()}",
                 f"checkpoint.every={args.steps + 1}", "checkpoint.save_frozen=false", "log.every=1",
                 "log.tensorboard=false", "validate=null", f"precision={args.precision}",
                 f"distributed.strategy={args.strategy}", f"device={'cpu' if args.tiny else 'auto'}",
                 "data.ratios=null", "data.val=null",
                 f"data.sources={{synth: {{type: prist, dataset_dir: {data}, split: train}}}}"]
    if args.tiny:  # no stage-0 SAM-tiny needed to time steps
        overrides.append("preset_overrides.mask_decoder.settings.checkpoint=null")
    config = load_config(f"{family}/{stage}", overrides)
    if not args.tiny:  # random full-size weights: the preset's parts with random_init
        from pixelagent.registry import get_registry

        random_preset = _meta_preset(config, get_registry())
        parts = {k: random_preset.choice(k).model_dump() for k in ("visual_encoder", "llm", "alignment", "mask_decoder")}
        config = config.model_copy(update={"preset_overrides": {**config.preset_overrides, **parts}})
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    trainer = Trainer(config)
    trainer.run()
    rows = [json.loads(line) for line in (work / stage / "metrics.jsonl").read_text().splitlines()]
    times = [r["samples"] / r["samples_per_s"] for r in rows[1:]] or [rows[0]["samples"] / rows[0]["samples_per_s"]]
    step_s = statistics.median(times)
    samples_per_s = batch / step_s
    tokens, flops = _per_sample(trainer, data)
    peak = max((r.get("gpu_peak_gib", 0.0) for r in rows), default=0.0)
    peak_tflops = args.peak_tflops or _peak_tflops()
    mfu = None if peak_tflops is None or args.tiny else flops * samples_per_s / world.size / (peak_tflops * 1e12)
    return {"stage": stage, "peak_gib": peak, "step_s": step_s, "samples_per_s": samples_per_s,
            "tokens_per_s": tokens * samples_per_s, "mfu": mfu, "flops_per_sample": flops}


def _per_sample(trainer, data: Path) -> tuple[float, float]:
    """Mean LLM positions per sample and model FLOPs per sample (see the module docstring)."""
    from pixelagent.data.records import load_split
    from pixelagent.nn.model import SegmentationModel
    from pixelagent.registry import get_registry
    from pixelagent.training.memory import _meta_preset

    # the trained model is gone with its process group: count from a meta-device build
    registry = get_registry()
    preset = _meta_preset(trainer.config, registry)
    model = SegmentationModel(registry.build(preset), preset)
    records = load_split(data, "train")[:32]
    visual = int(getattr(model.parts["visual_encoder"], "num_tokens", 0))
    tokens = statistics.mean(len(model.llm.encode_dialogue(r.turns)[0]) - 1 + visual for r in records)
    llm_frozen = sum(p.numel() for p in model.llm.parameters() if not p.requires_grad)
    llm_trainable = sum(p.numel() for p in model.llm.parameters() if p.requires_grad)
    vision = sum(p.numel() for p in model.parts["visual_encoder"].parameters())
    sam_encoder = sum(p.numel() for p in model.parts["mask_decoder"].sam.image_encoder.parameters())
    position = model.parts["mask_decoder"].sam.image_encoder.pos_embed  # (1, e, e, C)
    image_tokens = position.shape[1] * position.shape[2]
    flops = (4 * llm_frozen + 6 * llm_trainable) * tokens + 2 * vision * visual + 2 * sam_encoder * image_tokens
    return tokens, float(flops)


def _peak_tflops() -> float | None:
    import torch

    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    return next((v for k, v in PEAK_TFLOPS.items() if k in name), None)


def _device_name(args) -> str:
    import torch

    return "CPU (tiny)" if args.tiny or not torch.cuda.is_available() else torch.cuda.get_device_name()


if __name__ == "__main__":
    sys.exit(main())
