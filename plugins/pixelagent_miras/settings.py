"""Settings of the MIRAS plugin's parts (light: no torch, so the plugin loads fast)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class DualEncoderSettings(BaseModel):
    """Settings of the ``dual`` visual encoder.

    Attributes:
        clip: CLIP checkpoint (local directory or hub id).
        convnext: ConvNeXt checkpoint in the transformers layout (``ConvNextModel``). MIRAS /
            Mini-Gemini use OpenCLIP's ConvNeXt-L; such a checkpoint must first be converted to
            the HF layout (config.json + model.safetensors with ``ConvNextModel`` key names),
            and then wants ``convnext_normalization: clip``.
        clip_image_size: X_L side; must match the CLIP checkpoint.
        hr_image_size: X_H side (a multiple of 32, ConvNeXt's total stride).
        convnext_stage: which ConvNeXt stage (1-4) gives the high-resolution features.
        convnext_normalization: mean/std the ConvNeXt checkpoint was trained with ("imagenet"
            for the HF ``facebook/convnext-*`` checkpoints, "clip" for OpenCLIP ones).
        fusion_heads: attention heads of the fusion (must divide CLIP's width).
        tiny: random-init tiny backbones for CPU tests (a local directory in ``clip`` /
            ``convnext`` is still loaded). Sizes and heads left unset then take the tiny
            values: CLIP 64 px, X_H 256 px, 2 heads.
        random_init: both backbones with their checkpoints' architectures and random weights
            (no download; :mod:`pixelagent.nn.architectures`), for benchmarks and memory plans.
        train_backbone: train CLIP and ConvNeXt too (frozen by default, as in MIRAS). For tiny
            models trained from scratch; the frozen-feature cache then skips this part.
        seed: seed of every random init (tiny backbones and the fusion module).
    """

    model_config = ConfigDict(extra="forbid")

    clip: str | None = "openai/clip-vit-large-patch14-336"
    convnext: str | None = "facebook/convnext-large-224-22k-1k"
    clip_image_size: int = Field(336, gt=0)
    hr_image_size: int = Field(768, gt=0, multiple_of=32)
    convnext_stage: int = Field(3, ge=1, le=4)
    convnext_normalization: Literal["imagenet", "clip"] = "imagenet"
    fusion_heads: int = Field(16, ge=1)
    tiny: bool = False
    random_init: bool = False
    train_backbone: bool = False
    seed: int = 0


class RegionAlignmentSettings(BaseModel):
    """Semantic region alignment: attention heads (DESIGN §2: 8 over 256-d) and the init seed."""

    model_config = ConfigDict(extra="forbid")

    heads: int = Field(8, ge=1)
    seed: int = 0
