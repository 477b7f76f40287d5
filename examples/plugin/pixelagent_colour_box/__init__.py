"""An example pixelagent plugin: the ``colour-box`` mask decoder and the ``gpt4o-colour-box`` preset.

Hook implementations only register names, settings and builders; the decoder itself lives in
:mod:`pixelagent_colour_box.decoder` and is imported when a preset that uses it is built.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from pixelagent import hookimpl


class ColourBoxSettings(BaseModel):
    """Settings a preset may give the decoder (checked before anything is built)."""

    model_config = ConfigDict(extra="forbid")

    tolerance: float = Field(60.0, gt=0, description="largest RGB distance (0-255 scale) from the "
                             "box's dominant colour that still counts as the target")
    core: float = Field(0.5, gt=0, le=1, description="side of the central part of the box whose "
                        "median colour is taken as the target's colour, as a fraction of the box")


def _build(settings: ColourBoxSettings, context):
    from pixelagent_colour_box.decoder import ColourBoxDecoder

    return ColourBoxDecoder(settings.tolerance, settings.core)


@hookimpl
def register_mask_decoders(register):
    register("colour-box", _build, settings=ColourBoxSettings,
             description="box prompt → the pixels in the box near its dominant colour")


@hookimpl
def register_presets(register):
    register({"name": "gpt4o-colour-box",
              "description": "GPT-4o (or any OpenAI-compatible VLM) boxes, refined by colour",
              "visual_encoder": "none", "llm": {"name": "openai-chat", "settings": {"model": "gpt-4o"}},
              "alignment": "box-tags", "mask_decoder": "colour-box", "device": "cpu"})
