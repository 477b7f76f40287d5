"""Stage 0 for the tiny models: pretrain SAM-tiny on PRIST-Synth masks with box and point prompts.

    pixelagent recipe pretrain-sam-tiny --data DIR [DIR ...] --out runs/sam-tiny
        [--steps 3000] [--images 8] [--prompts 4] [--lr 1e-3] [--threads 2] [--resume]

The 7B models start from Meta's SAM, trained on SA-1B with box and point prompts; the tiny
models have no such checkpoint, so their SAM learns to segment at the same time as the LLM learns
to point at things, and its masks stay blobby. This recipe plays SA-1B's part on PRIST-Synth:
every mask of every training dialogue (objects, parts, words) is a target, prompted either by its
box (jittered by up to 5 % of its side) or by one point drawn inside it. Image encoder, learned
prompt embeddings and mask decoder train; the loss is BCE + DICE on the mask plus the squared
error of SAM's IoU prediction, as in SAM.

Writes OUT/sam_tiny.pth (an official-layout SAM state dict: set ``mask_decoder.settings.checkpoint``
to it), OUT/metrics.jsonl, OUT/state.pt (resume) and OUT/summary.json with the validation mean IoU
for box and point prompts.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from pixelagent.arguments import non_negative_int, positive_int

STATE_FILE, WEIGHTS_FILE = "state.pt", "sam_tiny.pth"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="pixelagent recipe pretrain-sam-tiny", description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, nargs="+", required=True,
                        help="PRIST-format dataset folders (train split; the first one's val split validates)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=positive_int, default=3000)
    parser.add_argument("--images", type=positive_int, default=8, help="images per step")
    parser.add_argument("--prompts", type=positive_int, default=4, help="targets prompted per image (at most)")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup", type=non_negative_int, default=100)
    parser.add_argument("--threads", type=positive_int, default=2)
    parser.add_argument("--seed", type=non_negative_int, default=0)
    parser.add_argument("--val-images", type=positive_int, default=100)
    parser.add_argument("--save-every", type=positive_int, default=250)
    parser.add_argument("--resume", action="store_true", help="continue from OUT/state.pt")
    return parser.parse_args(argv)


def build_sam(seed: int):
    """A SAM-tiny mask-decoder part whose image encoder and prompt embeddings train too."""
    from pixelagent.registry import BuildContext, get_registry

    registry = get_registry()
    preset = registry.preset("miras-tiny").preset.with_overrides(
        device="cpu", dtype="float32", weights=None,
        mask_decoder={"name": "sam", "settings": {"size": "tiny", "train_image_encoder": True, "seed": seed}})
    spec = registry.part("mask_decoder", "sam")
    part = spec.builder(spec.validate_settings(preset.mask_decoder.settings), BuildContext(preset))
    part.sam.prompt_encoder.requires_grad_(True)
    return part


def prompts_for(masks: np.ndarray, rng: np.random.Generator, limit: int):
    """Up to ``limit`` targets of one image, split into (box targets, boxes) and (point targets, points)."""
    keep = [i for i in rng.permutation(len(masks))[:limit] if masks[i].any()]
    boxes, box_targets, points, point_targets = [], [], [], []
    for i in keep:
        ys, xs = np.nonzero(masks[i])
        if rng.random() < 0.5:
            x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
            jitter = rng.uniform(-0.05, 0.05, 4) * np.array([x1 - x0, y1 - y0, x1 - x0, y1 - y0])
            boxes.append(np.array([x0, y0, x1, y1], dtype=np.float32) + jitter)
            box_targets.append(masks[i])
        else:
            j = rng.integers(len(xs))
            points.append(np.array([xs[j], ys[j]], dtype=np.float32))
            point_targets.append(masks[i])
    return (box_targets, boxes), (point_targets, points)


def target_losses(logits: torch.Tensor, iou_pred: torch.Tensor, targets: torch.Tensor):
    """(bce, dice, iou mse) summed over n masks, and the n masks' IoU (no gradient)."""
    from pixelagent.nn.losses import bce_loss, dice_loss

    with torch.no_grad():
        pred = logits > 0
        inter = (pred & targets).flatten(1).sum(-1).float()
        union = (pred | targets).flatten(1).sum(-1).float().clamp(min=1)
        iou = inter / union
    mse = ((iou_pred - iou) ** 2).sum()
    return bce_loss(logits, targets), dice_loss(logits, targets), mse, iou


def prompted(part, embeddings, index: int, masks: np.ndarray, rng: np.random.Generator, limit: int):
    """For image ``index``: (logits (n, H, W), predicted IoU (n,), targets (n, H, W)) per prompt kind used."""
    for kind, (targets, geometry) in zip(("boxes", "points"), prompts_for(masks, rng, limit)):
        if targets:
            logits, iou_pred = part.geometric_logits(embeddings, index, **{kind: torch.from_numpy(np.stack(geometry))})
            yield kind, logits, iou_pred, torch.from_numpy(np.stack(targets))


def step_losses(part, examples, rng: np.random.Generator, limit: int):
    """Summed (bce, dice, iou mse), the mask count and the masks' IoUs for one batch of examples."""
    embeddings = part.embed_batch([e.load_image() for e in examples])
    totals, count, ious = [torch.zeros(()) for _ in range(3)], 0, []
    for index, example in enumerate(examples):
        for _, logits, iou_pred, targets in prompted(part, embeddings, index, example.masks, rng, limit):
            *losses, iou = target_losses(logits, iou_pred, targets)
            totals = [t + l for t, l in zip(totals, losses)]
            count += len(targets)
            ious.extend(iou.tolist())
    return totals, count, ious


def validate(part, dataset, images: int, seed: int) -> dict[str, float]:
    """Mean IoU on the first ``images`` validation images, every mask, box and point prompts."""
    rng = np.random.default_rng(seed)
    results: dict[str, list[float]] = {"boxes": [], "points": []}
    part.eval()
    with torch.no_grad():
        for i in range(min(images, len(dataset))):
            example = dataset[i]
            embedding = part.embed_batch([example.load_image()])
            for kind, logits, iou_pred, targets in prompted(part, embedding, 0, example.masks, rng, len(example.masks)):
                results[kind].extend(target_losses(logits, iou_pred, targets)[3].tolist())
    part.train()
    return {f"val_iou_{kind}": float(np.mean(v)) if v else 0.0 for kind, v in results.items()}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # `pixelagent recipe` runs this in the caller's process: leave its thread count and RNG as found
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    from pixelagent.nn.device import seeded_rng

    try:
        with seeded_rng(args.seed):  # CPU and CUDA streams restored afterwards
            return pretrain(args)
    finally:
        torch.set_num_threads(threads)


def pretrain(args: argparse.Namespace) -> int:
    from torch.utils.data import ConcatDataset

    from pixelagent.data.adapters import build_dataset
    from pixelagent.training.loop import warmup_linear

    train = ConcatDataset([build_dataset({"type": "prist", "dataset_dir": str(d), "split": "train"})
                           for d in args.data])
    val = build_dataset({"type": "prist", "dataset_dir": str(args.data[0]), "split": "val"})
    part = build_sam(args.seed)
    part.train()
    params = [p for p in part.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.95), weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_linear(args.warmup, args.steps))
    args.out.mkdir(parents=True, exist_ok=True)
    start = _resume(args, part, optimizer, schedule)
    began = time.perf_counter()
    with open(args.out / "metrics.jsonl", "a") as log:
        for step in range(start, args.steps):
            rng = np.random.default_rng([args.seed, step])  # the batch is a pure function of the step
            examples = [train[int(i)] for i in rng.integers(len(train), size=args.images)]
            (bce, dice, mse), count, ious = step_losses(part, examples, rng, args.prompts)
            loss = (bce + dice + mse) / max(count, 1)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            schedule.step()
            if (step + 1) % 25 == 0:
                row = {"step": step + 1, "loss": loss.item(), "bce": bce.item() / max(count, 1),
                       "dice": dice.item() / max(count, 1), "train_iou": float(np.mean(ious)) if ious else 0.0,
                       "lr": schedule.get_last_lr()[0], "seconds": round(time.perf_counter() - began, 1)}
                log.write(json.dumps(row) + "\n")
                log.flush()
                print(json.dumps(row), flush=True)
            if (step + 1) % args.save_every == 0 or step + 1 == args.steps:
                _save(args.out, part, optimizer, schedule, step + 1)
    summary = {"steps": args.steps, "images_per_step": args.images, "prompts_per_image": args.prompts,
               "lr": args.lr, "data": [str(d) for d in args.data],
               "train_seconds": round(time.perf_counter() - began, 1),
               **validate(part, val, args.val_images, args.seed)}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary))
    return 0


def _save(out: Path, part, optimizer, schedule, step: int) -> None:
    # the weights first, in SAM's own layout; then the resumable state, each via a temporary file
    for name, payload in ((WEIGHTS_FILE, part.sam.state_dict()),
                          (STATE_FILE, {"step": step, "model": part.sam.state_dict(),
                                        "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict()})):
        tmp = out / (name + ".tmp")
        torch.save(payload, tmp)
        tmp.replace(out / name)


def _resume(args, part, optimizer, schedule) -> int:
    path = args.out / STATE_FILE
    if not path.is_file():
        return 0
    if not args.resume:
        from pixelagent.errors import ConfigError

        raise ConfigError(f"{args.out} already holds a pretraining run; pass --resume to continue it, "
                          "or choose another --out")
    state = torch.load(path, map_location="cpu", weights_only=True)
    part.sam.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    schedule.load_state_dict(state["schedule"])
    return int(state["step"])


if __name__ == "__main__":
    raise SystemExit(main())
