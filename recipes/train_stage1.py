"""Stage 1: mask-text alignment pretraining (semantic seg : referring seg : VQA : captions, 9:6:2:2).

    pixelagent recipe train-stage1 --config miras_tiny/stage1 [key=value ...] [--resume]
    torchrun --nproc_per_node 8 recipes/train_stage1.py --config miras_7b/stage1

Trains LoRA (q/v), lm_head, embed_tokens, the projection / alignment / fusion modules and SAM's
mask decoder with eq. 8; writes checkpoints and ``final/`` under the config's ``output_dir``.
"""

from __future__ import annotations

import sys

from pixelagent.training.entry import run_script, train


def main(argv: list[str] | None = None) -> int:
    return train(argv, "pixelagent recipe train-stage1", __doc__.splitlines()[0])


if __name__ == "__main__":
    sys.exit(run_script(main))
