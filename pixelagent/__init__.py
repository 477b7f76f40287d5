"""pixelagent: pixel-level reasoning segmentation through multi-turn conversation.

    from pixelagent import Agent
    session = Agent(preset="miras-tiny").session("photo.jpg")
    reply = session.ask("What is on the bottle's label?")
    reply.text, reply.mask            # str, Mask | None

Names are imported lazily so that ``import pixelagent`` (and ``pixelagent --help``) stay
light; heavy libraries are imported by the parts that need them, when they are built.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from pixelagent.hookspecs import hookimpl

__version__ = "0.1.0.dev0"

_EXPORTS = {
    "Agent": "pixelagent.agent",
    "Session": "pixelagent.session",
    "Mask": "pixelagent.mask",
    "Granularity": "pixelagent.mask",
    "Target": "pixelagent.results",
    "Reply": "pixelagent.results",
    "Turn": "pixelagent.results",
    "IntentState": "pixelagent.intent",
    "Focus": "pixelagent.intent",
    "Relation": "pixelagent.intent",
    "Preset": "pixelagent.presets",
    "PartChoice": "pixelagent.presets",
    "load_image": "pixelagent.images",
    "get_registry": "pixelagent.registry",
    "PixelAgentError": "pixelagent.errors",
    "TurnRecord": "pixelagent.schema",
    "SessionRecord": "pixelagent.schema",
    "TurnLog": "pixelagent.logs",
    "ServerSettings": "pixelagent.server",
    "create_app": "pixelagent.server",
}

__all__ = ["hookimpl", "__version__", *_EXPORTS]

if TYPE_CHECKING:
    from pixelagent.agent import Agent
    from pixelagent.errors import PixelAgentError
    from pixelagent.images import load_image
    from pixelagent.intent import Focus, IntentState, Relation
    from pixelagent.logs import TurnLog
    from pixelagent.mask import Granularity, Mask
    from pixelagent.presets import PartChoice, Preset
    from pixelagent.registry import get_registry
    from pixelagent.results import Reply, Target, Turn
    from pixelagent.schema import SessionRecord, TurnRecord
    from pixelagent.server import ServerSettings, create_app
    from pixelagent.session import Session


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'pixelagent' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
