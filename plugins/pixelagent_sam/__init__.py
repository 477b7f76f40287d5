"""pixelagent plugin: SAM (segment-anything) as the mask decoder, registered as ``sam``.

Only light imports here: ``pixelagent --help`` loads every plugin, so torch and
segment-anything are imported by the builder, when a preset with ``mask_decoder: sam`` is built.
"""

from __future__ import annotations

from typing import Any

from pixelagent import hookimpl

from .settings import SamSettings

__all__ = ["SamSettings", "build_sam_mask_decoder", "register_mask_decoders"]


def build_sam_mask_decoder(settings: SamSettings, context: Any) -> Any:
    """Builder of the ``sam`` mask decoder (see :class:`pixelagent_sam.part.SamMaskDecoder`)."""
    from .part import build_sam_decoder  # heavy: torch + segment_anything.modeling

    return build_sam_decoder(settings, context)


@hookimpl
def register_mask_decoders(register):
    register("sam", build_sam_mask_decoder, settings=SamSettings,
             description="SAM ViT-H/L/B (or tiny) image encoder + prompt encoder + mask decoder")
