"""The command line shared by the training recipes: ``--config NAME [key=value ...] [--resume]``.

Flags and overrides come in any order (``k=v --config X --resume k2=v2``). A bad command line
or any other expected failure is one ``error: …`` line on stderr, never a traceback, whether
the recipe runs through ``pixelagent recipe`` or directly (``python`` / ``torchrun``).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Callable

from pixelagent.errors import ConfigError, PixelAgentError
from pixelagent.training.config import load_config, shipped_configs

DEBUG_ENV = "PIXELAGENT_DEBUG"  # the CLI's: set it for the traceback


class _Parser(argparse.ArgumentParser):
    """argparse that raises ConfigError (one line) instead of printing usage and exiting."""

    def error(self, message: str):
        raise ConfigError(f"{self.prog}: {message} (see {self.prog} --help)")


def parse(argv: list[str] | None, prog: str, description: str) -> tuple[argparse.Namespace, list[str]]:
    parser = _Parser(prog=prog, description=description,
                     epilog="shipped configs: " + ", ".join(shipped_configs()))
    parser.add_argument("--config", required=True, help="a shipped config name (miras_tiny/stage1) or a YAML path")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the newest intact checkpoint in output_dir (from step 0 if there is none)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. optim.lr=1e-4 optim.max_steps=100")
    # intermixed: overrides before, between and after the flags (plain parse_args stops
    # collecting positionals at the first flag and rejects the ones after it)
    args = parser.parse_intermixed_args(argv)
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


def run_script(main: Callable[[], int]) -> int:
    """``main()`` for a recipe run as a script: a PixelAgentError becomes one ``error:`` line
    (prefixed with the rank under torchrun) and exit status 1, like the ``pixelagent`` CLI."""
    try:
        return main()
    except PixelAgentError as exc:
        if os.environ.get(DEBUG_ENV, "") not in {"", "0"}:
            raise
        world = int(os.environ.get("WORLD_SIZE", "1") or 1)
        rank = f"rank {os.environ.get('RANK', '0')}: " if world > 1 else ""
        print(f"error: {rank}{exc}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
