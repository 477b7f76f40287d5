"""Parts that belong to no model family, registered by the core itself."""

from __future__ import annotations

from typing import Any

import numpy as np

from pixelagent.hookspecs import hookimpl
from pixelagent.parts import VisualEncoder


class NoVisualEncoder(VisualEncoder):
    """For backbones that see the image themselves (remote chat models): encodes nothing."""

    def encode(self, image: np.ndarray) -> None:
        return None


def _build_none(settings: dict[str, Any], context: Any) -> NoVisualEncoder:
    return NoVisualEncoder()


@hookimpl
def register_visual_encoders(register):
    register("none", _build_none, description="no local encoder; the LLM backbone sees the image")
