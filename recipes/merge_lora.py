"""Fold a trained model's LoRA adapter into its LLM weights and save the merged model.

    pixelagent recipe merge-lora runs/miras_tiny/stage2/final --out runs/miras_tiny/merged

The merged directory loads with ``Agent("runs/miras_tiny/merged")`` and builds without adapters.
"""

from __future__ import annotations

import argparse
import sys

from pixelagent.nn.model import SegmentationModel, read_preset


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pixelagent recipe merge-lora", description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a directory written by save_pretrained (e.g. a run's final/)")
    parser.add_argument("--out", required=True, help="where to write the merged model")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    read_preset(args.model)  # a clear error before anything is built, if it is no model directory
    model = SegmentationModel.from_pretrained(args.model, device=args.device)
    model.merge_lora()
    model.save_pretrained(args.out)
    print(f"merged model: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
