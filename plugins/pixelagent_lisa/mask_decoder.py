"""``lisa-sam``: the SAM folded into a LISA release (``model.visual_model.*``) as a mask decoder.

The part is the ``sam`` plugin's :class:`~pixelagent_sam.part.SamMaskDecoder` (same inference and
training paths: 1024-px resize and padding, one sparse prompt token, single-mask output, masks
post-processed to the original size); only where the weights come from differs.
"""

from __future__ import annotations

from typing import Any

from pixelagent.errors import ConfigError
from pixelagent.nn.device import building_on, seeded_rng, torch_device, torch_dtype
from pixelagent_lisa.release import SAM_PREFIX, open_release
from pixelagent_lisa.settings import ReleaseSamSettings


def build_release_sam(settings: ReleaseSamSettings, context: Any):
    """The registry builder: SAM from the release (or random), on the preset's device and dtype."""
    from pixelagent_sam.part import SamMaskDecoder

    sam = _release_sam(settings, context) if settings.release else _random_sam(settings, context)
    with seeded_rng(settings.seed):
        decoder = SamMaskDecoder(sam, train_image_encoder=settings.train_image_encoder)
    return decoder.to(device=torch_device(context.device), dtype=torch_dtype(context.dtype)).eval()


def _release_sam(settings: ReleaseSamSettings, context: Any):
    from pixelagent_sam.checkpoint import sam_from_state_dict

    folder, files = open_release(settings.release, "mask_decoder.settings.release", context.shared)
    state = files.tensors(SAM_PREFIX)
    if not state:
        raise ConfigError(f"{folder} holds no SAM ({SAM_PREFIX}* keys): is it a LISA release? For a plain SAM "
                          "checkpoint use the sam mask decoder with its checkpoint setting")
    return sam_from_state_dict(state, settings.size, source=f"{folder} ({SAM_PREFIX}*)")


def _random_sam(settings: ReleaseSamSettings, context: Any):
    from pixelagent_sam.modeling import build_sam_model

    if not settings.random_init:
        raise ConfigError("the lisa-sam mask decoder needs mask_decoder.settings.release (a LISA release folder "
                          "or hub id) or random_init: true")
    with seeded_rng(settings.seed), building_on(context.device, context.dtype):
        return build_sam_model(settings.size or "vit_h")
