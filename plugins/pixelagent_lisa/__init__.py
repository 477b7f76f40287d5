"""pixelagent plugin: LISA — the ``[SEG]`` projection alignment, the released checkpoints, the presets.

LISA = CLIP-L/14 + LLaVA + ``[SEG]`` hidden state → Linear-ReLU-Linear → 256-d SAM prompt.

Registers the ``lisa-projection`` alignment and the ``lisa-sam`` mask decoder (SAM as folded
into a LISA release), the presets ``lisa`` / ``lisa-tiny`` (the architecture on LLaVA-v1.6, to
train) and one preset per published release (``lisa-7b-v1``, aliased ``xinlai/LISA-7B-v1``,
...; see :mod:`pixelagent_lisa.release`), recognises release folders for ``Agent(folder)`` and
``Agent("xinlai/LISA-7B-v1")`` (the ``resolve_model_dir`` hook), and adds ``pixelagent convert lisa``.
"""

from __future__ import annotations

from pixelagent import hookimpl
from pixelagent_lisa.release import RELEASES, release_preset, release_preset_data
from pixelagent_lisa.settings import ProjectionSettings, ReleaseSamSettings

__all__ = ["RELEASES", "ProjectionSettings", "ReleaseSamSettings", "release_preset"]


def _build_projection(settings: ProjectionSettings, context):
    from pixelagent.nn.alignment import build_alignment
    from pixelagent_lisa.alignment import SegProjectionAlignment, load_release_projection
    from pixelagent_lisa.release import FCS_PREFIX, open_release

    alignment = build_alignment(SegProjectionAlignment, settings.seed, context)
    if settings.release:
        folder, files = open_release(settings.release, "alignment.settings.release", context.shared)
        load_release_projection(alignment, files.tensors(FCS_PREFIX), str(folder))
    return alignment


def _build_release_sam(settings: ReleaseSamSettings, context):
    from pixelagent_lisa.mask_decoder import build_release_sam

    return build_release_sam(settings, context)


@hookimpl
def register_alignment_strategies(register):
    register("lisa-projection", _build_projection, aliases=("seg-projection",), settings=ProjectionSettings,
             description="[SEG] state → Linear-ReLU-Linear → 256-d prompt (LISA)")


@hookimpl
def register_mask_decoders(register):
    register("lisa-sam", _build_release_sam, settings=ReleaseSamSettings,
             description="SAM as folded into a LISA release (model.visual_model.*), or random")


LLAVA_7B = "llava-hf/llava-v1.6-vicuna-7b-hf"
_SIZES = {"7b": "7B (LLaVA-Lightning-7B-v1-1)", "13b-llama2": "13B (LLaMA-2 LLaVA)"}


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
    for name, hub_id in RELEASES.items():
        size = _SIZES["13b-llama2" if "13b" in name else "7b"]
        kind = ", explanatory answers" if name.endswith("explanatory") else ""
        description = f"LISA's released {size}{kind} ({hub_id}): CLIP-L/14 @224 + LLaVA-v1 + SAM ViT-H"
        register(release_preset_data(hub_id, name, description), aliases=(hub_id,))


@hookimpl
def resolve_model_dir(path):
    """A LISA release folder (or its Hub snapshot: ``Agent("xinlai/LISA-7B-v1")``) → its preset."""
    from pixelagent_lisa.release import is_release

    return release_preset(path) if is_release(path) else None


@hookimpl
def register_commands(cli):
    from pixelagent_lisa.cli import convert_app  # typer only: no torch at --help

    cli.add_typer(convert_app(), name="convert")
