"""Stage 2: pixel-level segmentation fine-tuning on PRIST mixed with VQA (4:1), from all stage-1 weights.

    pixelagent recipe train-stage2 --config miras_tiny/stage2 [init_from=runs/stage1/final] [--resume]
    torchrun --nproc_per_node 8 recipes/train_stage2.py --config miras_7b/stage2

``init_from`` names the stage-1 ``final/`` directory: every stage-1 weight (LoRA, projection,
alignment, mask decoder, lm_head, embeddings) is loaded; nothing is re-initialised.
"""

from __future__ import annotations

import sys

from pixelagent.training.entry import run_script, train


def main(argv: list[str] | None = None) -> int:
    return train(argv, "pixelagent recipe train-stage2", __doc__.splitlines()[0])


if __name__ == "__main__":
    sys.exit(run_script(main))
