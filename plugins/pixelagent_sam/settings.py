"""Settings of the ``sam`` mask decoder (light: pydantic only, loaded by ``pixelagent --help``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class SamSettings(BaseModel):
    """What a preset may say about the ``sam`` mask decoder.

    Example (YAML preset)::

        mask_decoder: {name: sam, settings: {size: vit_h, checkpoint: ~/weights/sam_vit_h_4b8939.pth}}
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    size: Literal["vit_h", "vit_l", "vit_b", "tiny"] = Field(
        "vit_h",
        description="Image-encoder size: SAM's published vit_h / vit_l / vit_b (1024-pixel input, "
        "(256, 64, 64) embedding), or tiny (128-pixel input, (256, 16, 16) embedding) for CPU tests. "
        "The prompt encoder and mask decoder are the same in every size.",
    )
    checkpoint: str | None = Field(
        None,
        description="Path of an official SAM state dict (sam_vit_h_4b8939.pth, sam_vit_l_0b3195.pth, "
        "sam_vit_b_01ec64.pth) or one saved the same way for this size; '~' is expanded.",
    )
    random_init: bool = Field(
        False,
        description="Allow a vit_h / vit_l / vit_b without a checkpoint, randomly initialised "
        "(for GPU benchmarks only; the masks are meaningless). tiny never needs it.",
    )
    train_image_encoder: bool = Field(
        False,
        description="Train the image encoder too (it is frozen by default, as in LISA and MIRAS). "
        "For tiny models trained from scratch, whose random encoder would otherwise stay random; "
        "the frozen-feature cache then skips this part.",
    )
    prompt_gate: bool = Field(
        False,
        description="Also turn each embedding prompt into a dense prompt: the image embedding gated "
        "channel-wise by a linear map of the prompt, then a zero-initialised 1x1 convolution "
        "(FiLM-style; not in SAM, LISA or MIRAS). The tiny presets use it: a SAM-tiny decoder "
        "prompted by one sparse token finds the kind of thing named but hardly which instance.",
    )
    seed: int = Field(
        0,
        ge=0,
        description="Seed of the random initialisation, so two builds without a checkpoint are identical.",
    )

    @model_validator(mode="after")
    def _checkpoint_or_random(self) -> SamSettings:
        # Both at once is contradictory; refuse it rather than silently pick one.
        if self.random_init and self.checkpoint is not None:
            raise ValueError("give either checkpoint or random_init: true, not both")
        return self
