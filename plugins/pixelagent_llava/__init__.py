"""pixelagent plugin: the LLaVA-NeXT LLM backbone and LLaVA's CLIP visual encoder.

Registers ``llava-next`` (LLM backbone) and ``clip`` (visual encoder). Heavy modules are
imported inside the builders, so loading the plugin costs no torch import.
"""

from __future__ import annotations

from pixelagent import hookimpl
from pixelagent_llava.settings import ClipEncoderSettings, LlavaSettings


def _build_llava(settings: LlavaSettings, context):
    from pixelagent_llava.backbone import build_from_settings

    return build_from_settings(settings, context)


def _build_clip(settings: ClipEncoderSettings, context):
    from pixelagent_llava.clip_encoder import ClipVisualEncoder

    return ClipVisualEncoder.build(settings, context.device, context.dtype)


@hookimpl
def register_llm_backbones(register):
    register("llava-next", _build_llava, aliases=("llava",), settings=LlavaSettings,
             description="LLaVA-v1.6 (HF LLaVA-NeXT) with [SEG]/[OBJ], LoRA, KV-cache reuse")


@hookimpl
def register_visual_encoders(register):
    register("clip", _build_clip, aliases=("clip-l14-336",), settings=ClipEncoderSettings,
             description="CLIP ViT-L/14 @336, layer -2 patch tokens (LLaVA / LISA)")
