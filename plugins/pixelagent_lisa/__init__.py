"""pixelagent plugin: LISA — the ``[SEG]`` projection alignment and the ``lisa`` presets.

LISA = CLIP-L/14 + LLaVA + ``[SEG]`` hidden state → Linear-ReLU-Linear → 256-d SAM prompt.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from pixelagent import hookimpl


class ProjectionSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seed: int = 0  # initialisation seed of the projection


def _build_projection(settings: ProjectionSettings, context):
    from pixelagent.nn.alignment import build_alignment
    from pixelagent_lisa.alignment import SegProjectionAlignment

    return build_alignment(SegProjectionAlignment, settings.seed, context)


@hookimpl
def register_alignment_strategies(register):
    register("lisa-projection", _build_projection, aliases=("seg-projection",), settings=ProjectionSettings,
             description="[SEG] state → Linear-ReLU-Linear → 256-d prompt (LISA)")


LLAVA_7B = "llava-hf/llava-v1.6-vicuna-7b-hf"


@hookimpl
def register_presets(register):
    register({"name": "lisa", "description": "LISA: CLIP-L/14 + LLaVA-v1.6-7B + [SEG] projection + SAM ViT-H",
              "visual_encoder": {"name": "clip"},
              "llm": {"name": "llava-next", "settings": {"pretrained": LLAVA_7B}},
              "alignment": "lisa-projection",
              "mask_decoder": {"name": "sam", "settings": {"size": "vit_h", "checkpoint": "sam_vit_h_4b8939.pth"}}},
             aliases=("lisa-7b",))
    register({"name": "lisa-tiny", "description": "LISA architecture at a CPU-test size (random init)",
              "visual_encoder": {"name": "clip", "settings": {"tiny": True}},
              "llm": {"name": "llava-next", "settings": {"tiny": True, "max_new_tokens": 64}},
              "alignment": "lisa-projection",
              "mask_decoder": {"name": "sam", "settings": {"size": "tiny", "prompt_gate": True}}})
