"""pixelagent plugin: the LLaVA LLM backbones and LLaVA's CLIP visual encoders.

Registers ``llava-next`` (LLaVA-v1.6, HF layout) and ``llava-v1`` (the original LLaVA-v1 layout,
which LISA's releases use) as LLM backbones, and ``clip`` / ``clip-v1`` (the tower a LLaVA-v1
checkpoint names, with its preprocessing) as visual encoders. Heavy modules are imported inside
the builders, so loading the plugin costs no torch import.

Public for other plugins: :mod:`pixelagent_llava.checkpoints` (finding checkpoint folders, hub ids
included, and reading one slice of sharded weights), the ``llava_v1`` and ``clip_v1`` settings
and builders.
"""

from __future__ import annotations

from pixelagent import hookimpl
from pixelagent_llava.settings import ClipEncoderSettings, LlavaSettings
from pixelagent_llava.settings_v1 import ClipV1Settings, LlavaV1Settings


def _build_llava(settings: LlavaSettings, context):
    from pixelagent_llava.backbone import build_from_settings

    return build_from_settings(settings, context)


def _build_clip(settings: ClipEncoderSettings, context):
    from pixelagent_llava.clip_encoder import ClipVisualEncoder

    return ClipVisualEncoder.build(settings, context.device, context.dtype)


def _build_llava_v1(settings: LlavaV1Settings, context):
    from pixelagent_llava.llava_v1 import build_llava_v1

    return build_llava_v1(settings, context)


def _build_clip_v1(settings: ClipV1Settings, context):
    from pixelagent_llava.clip_v1 import build_clip_v1

    return build_clip_v1(settings, context.device, context.dtype)


@hookimpl
def register_llm_backbones(register):
    register("llava-next", _build_llava, aliases=("llava",), settings=LlavaSettings,
             description="LLaVA-v1.6 (HF LLaVA-NeXT) with [SEG]/[OBJ], LoRA, KV-cache reuse")
    register("llava-v1", _build_llava_v1, settings=LlavaV1Settings,
             description="LLaVA-v1 layout (LISA releases): LLaMA + Linear projector, llava_v1 template, 8/4-bit")


@hookimpl
def register_visual_encoders(register):
    register("clip", _build_clip, aliases=("clip-l14-336",), settings=ClipEncoderSettings,
             description="CLIP ViT-L/14 @336, layer -2 patch tokens (LLaVA / LISA)")
    register("clip-v1", _build_clip_v1, settings=ClipV1Settings,
             description="the CLIP a LLaVA-v1 / LISA checkpoint names (L/14 @224), centre-cropped, layer -2")
