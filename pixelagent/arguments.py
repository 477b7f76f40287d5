"""Argument types for the recipes' command lines: counts that must make sense.

``type=int`` lets ``--limit -3`` through, and ``records[:-3]`` then evaluates all but the last
three dialogues without a word; ``--steps 0`` trains nothing and "succeeds". These types refuse
such values while the command line is parsed, so argparse prints one line naming the option
(``argument --limit: must be a whole number of at least 1, got -3``) before anything runs.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable


def at_least(minimum: int) -> Callable[[str], int]:
    """An argparse ``type``: a whole number ``>= minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be a whole number of at least {minimum}, got {value}")
        return value

    parse.__name__ = f"whole number >= {minimum}"  # what argparse names in its own messages
    return parse


#: a count of things (steps, dialogues, sessions, processes): 1 or more
positive_int = at_least(1)
#: a number that may be zero (a seed, warm-up steps, a layer index)
non_negative_int = at_least(0)
