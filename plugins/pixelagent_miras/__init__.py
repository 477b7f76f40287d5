"""pixelagent plugin: MIRAS — the dual visual encoder, semantic region alignment, ``miras`` presets.

MIRAS = ConvNeXt-L @768 + CLIP-L/14 @336 fused by cross-attention (eq. 4) + LLaVA-v1.6 +
``[OBJ]…[SEG]`` semantic region alignment (eq. 6) + SAM ViT-H.
"""

from __future__ import annotations

from pathlib import Path

from pixelagent import hookimpl
from pixelagent_miras.settings import DualEncoderSettings, RegionAlignmentSettings

#: The trained miras-tiny that ships with pixelagent (``pixelagent recipe build-miras-tiny``).
SHIPPED_TINY = Path(__file__).resolve().parent / "weights" / "miras-tiny"


def shipped_tiny_weights() -> str | None:
    """The shipped miras-tiny directory, or None in a checkout where it was not built yet."""
    return str(SHIPPED_TINY) if (SHIPPED_TINY / "model.safetensors").is_file() else None


def _build_dual(settings: DualEncoderSettings, context):
    from pixelagent_miras.dual_encoder import DualVisualEncoder

    return DualVisualEncoder.build(settings, context.device, context.dtype)


def _build_region_alignment(settings: RegionAlignmentSettings, context):
    from pixelagent.nn.alignment import build_alignment
    from pixelagent_miras.region_alignment import SemanticRegionAlignment

    return build_alignment(SemanticRegionAlignment, settings.seed, context, heads=settings.heads)


@hookimpl
def register_visual_encoders(register):
    register("miras-dual", _build_dual, aliases=("dual",), settings=DualEncoderSettings,
             description="ConvNeXt-L @768 + CLIP-L/14 @336, cross-attention fusion + MLP residual")


@hookimpl
def register_alignment_strategies(register):
    register("semantic-region", _build_region_alignment, aliases=("sra",), settings=RegionAlignmentSettings,
             description="[SEG] attends over the [OBJ]…[SEG] span (8 heads, 256-d) → Linear(256, 256)")


LLAVA_7B = "llava-hf/llava-v1.6-vicuna-7b-hf"


@hookimpl
def register_presets(register):
    register({"name": "miras", "description": "MIRAS: dual encoder + LLaVA-v1.6-7B + semantic region alignment + SAM ViT-H",
              "visual_encoder": {"name": "miras-dual"},
              "llm": {"name": "llava-next", "settings": {"pretrained": LLAVA_7B}},
              "alignment": "semantic-region",
              "mask_decoder": {"name": "sam", "settings": {"size": "vit_h", "checkpoint": "sam_vit_h_4b8939.pth"}}},
             aliases=("miras-7b",))
    weights = shipped_tiny_weights()
    register({"name": "miras-tiny",
              "description": ("MIRAS at a CPU size, trained on PRIST-Synth (shipped weights)" if weights
                              else "MIRAS architecture at a CPU size (random init: no shipped weights)"),
              "weights": weights,
              "visual_encoder": {"name": "miras-dual", "settings": {"tiny": True}},
              # context_window: its longest training dialogue is 422 positions; past that it degenerates
              "llm": {"name": "llava-next", "settings": {"tiny": True, "max_new_tokens": 64, "context_window": 448}},
              "alignment": {"name": "semantic-region", "settings": {"heads": 8}},
              "mask_decoder": {"name": "sam", "settings": {"size": "tiny", "prompt_gate": True}}})
