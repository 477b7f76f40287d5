"""The command line shared by the training recipes: ``--config NAME [key=value ...] [--resume]``."""

from __future__ import annotations

import argparse

from pixelagent.training.config import load_config, shipped_configs


def parse(argv: list[str] | None, prog: str, description: str) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(prog=prog, description=description,
                                     epilog="shipped configs: " + ", ".join(shipped_configs()))
    parser.add_argument("--config", required=True, help="a shipped config name (miras_tiny/stage1) or a YAML path")
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in output_dir")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. optim.lr=1e-4 optim.max_steps=100")
    args = parser.parse_args(argv)
    return args, args.overrides


def train(argv: list[str] | None, prog: str, description: str) -> int:
    """Load the config, train, print where the final model is."""
    from pixelagent.training.loop import Trainer

    args, overrides = parse(argv, prog, description)
    config = load_config(args.config, overrides)
    trainer = Trainer(config)
    final = trainer.run(resume=args.resume)
    if trainer.world.is_main:
        print(f"final model: {final}")
    return 0
