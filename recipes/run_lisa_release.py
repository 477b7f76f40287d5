"""Run a downloaded LISA release through pixelagent: a 3-turn session on a real photo, with mask areas, latency and peak GPU memory.

    hf download xinlai/LISA-7B-v1 --local-dir /models/LISA-7B-v1     # and openai/clip-vit-large-patch14
    python recipes/run_lisa_release.py /models/LISA-7B-v1 [--image photo.jpg] [--quantize 4bit] [--json]
    pixelagent recipe run-lisa-release xinlai/LISA-7B-v1            # a hub id: read from the HF cache

The photo is scikit-image's ``astronaut()`` unless ``--image`` names one; the three questions
narrow from the scene to a person to a part (``--ask`` replaces them). Each turn prints the
answer, every target's mask area (pixels and share of the image), the turn's latency, and at the
end the load time and the peak GPU memory (``torch.cuda.max_memory_allocated``). It needs a CUDA
GPU (``--device cpu`` runs it anyway, for tiny test releases) and the release's weights; without
either it says so in one line and exits 1.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

QUESTIONS = (
    "What is in this image?",
    "Who is the person in this image? Please output segmentation mask.",
    "Can you segment the flag in this image?",
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="pixelagent recipe run-lisa-release", description=__doc__.splitlines()[0])
    parser.add_argument("release", help="the LISA release: a downloaded folder or a hub id (xinlai/LISA-7B-v1)")
    parser.add_argument("--image", help="the photo (default: skimage.data.astronaut())")
    parser.add_argument("--ask", action="append", help="a question, in order (repeat; default: three narrowing ones)")
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu for tiny test releases")
    parser.add_argument("--dtype", default="auto", choices=["auto", "bfloat16", "float16", "float32"])
    parser.add_argument("--quantize", choices=["8bit", "4bit"], help="load the LLM quantized (needs bitsandbytes)")
    parser.add_argument("--json", action="store_true", help="print one JSON report instead of lines")
    return parser.parse_args(argv)


def load_photo(path: str | None) -> tuple[Any, str]:
    """The photo as RGB uint8 (H, W, 3) and its name."""
    from pixelagent.errors import MissingDependencyError
    from pixelagent.images import load_image

    if path:
        return load_image(path), path
    try:
        from skimage import data
    except ImportError:
        raise MissingDependencyError("no --image given and scikit-image, which ships the default photo, is not "
                                     "installed: pass --image PHOTO or pip install scikit-image") from None
    return data.astronaut(), "skimage.data.astronaut()"


def check_device(device: str) -> None:
    import torch

    from pixelagent.errors import ConfigError

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("run-lisa-release needs a CUDA GPU and none is visible (torch.cuda.is_available() is "
                          "False); run it on a GPU machine, or pass --device cpu for a tiny test release")


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Build the agent, ask the questions, and return the report."""
    import torch

    from pixelagent import Agent
    from pixelagent_lisa import release_preset

    check_device(args.device)
    image, name = load_photo(args.image)
    cuda = args.device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    overrides: dict[str, Any] = {"device": args.device, "dtype": args.dtype}
    if args.quantize:
        overrides["llm"] = {"settings": {"quantize": args.quantize}}
    start = time.perf_counter()
    agent = Agent(release_preset(args.release, **overrides))
    load_s = time.perf_counter() - start
    session = agent.session(image)
    turns = [_turn(session, question, image.shape[0] * image.shape[1], cuda) for question in args.ask or QUESTIONS]
    dtype = agent.preset.dtype if agent.preset.dtype != "auto" else ("bfloat16" if cuda else "float32")
    return {"release": args.release, "image": name, "image_size": list(image.shape[:2]), "device": args.device,
            "dtype": dtype, "quantize": args.quantize, "load_s": round(load_s, 2), "turns": turns,
            "peak_gpu_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
            "intent": [f"turn {f.turn}: {f.relation.value}" for f in session.intent.focuses]}


def _turn(session, question: str, pixels: int, cuda: bool) -> dict[str, Any]:
    import torch

    start = time.perf_counter()
    reply = session.ask(question)
    if cuda:
        torch.cuda.synchronize()
    latency = time.perf_counter() - start
    targets = [{"phrase": t.phrase, "area_px": int(t.mask.area), "area_share": round(t.mask.area / pixels, 4),
                "score": round(float(t.score), 3)} for t in reply.targets]
    return {"question": question, "answer": reply.raw_text, "targets": targets, "latency_s": round(latency, 3)}


def print_report(report: dict[str, Any]) -> None:
    print(f"{report['release']} on {report['device']} ({report['dtype']}"
          f"{', ' + report['quantize'] if report['quantize'] else ''}): loaded in {report['load_s']} s; "
          f"photo {report['image']} {report['image_size'][0]}x{report['image_size'][1]}")
    for index, turn in enumerate(report["turns"], 1):
        print(f"turn {index} ({turn['latency_s']} s): {turn['question']}")
        print(f"  answer: {turn['answer']}")
        for target in turn["targets"] or [None]:
            print("  no target" if target is None else
                  f"  mask {target['phrase'] or '[SEG]'!r}: {target['area_px']} px "
                  f"({100 * target['area_share']:.1f} % of the image), score {target['score']}")
    if report["peak_gpu_memory_gib"] is not None:
        print(f"peak GPU memory: {report['peak_gpu_memory_gib']} GiB")
    print("intent: " + "; ".join(report["intent"]))


def main(argv: list[str] | None = None) -> int:
    from pixelagent.errors import PixelAgentError

    args = parse_args(argv)
    try:
        report = run(args)
    except PixelAgentError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
