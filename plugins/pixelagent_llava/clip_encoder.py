"""LISA's / LLaVA's visual encoder: a frozen CLIP ViT-L/14-336, penultimate-layer patch tokens.

Real: ``openai/clip-vit-large-patch14-336``, 336 px → 24×24 = 576 tokens of 1024-d.
Tiny: :data:`pixelagent.nn.clip.TINY_CLIP_CONFIG`, 64 px → 8×8 = 64 tokens of 64-d.
"""

from __future__ import annotations

import numpy as np
import torch
from pydantic import BaseModel
from torch import Tensor, nn

from pixelagent.errors import ConfigError
from pixelagent.nn.clip import (
    CLIP_MEAN,
    CLIP_STD,
    TINY_CLIP_CONFIG,
    build_clip_vision,
    checked_image_size,
    clip_patch_features,
    resize_pixels,
    tiny_source,
)
from pixelagent.nn.device import building_on, seeded_rng, torch_device, torch_dtype
from pixelagent.parts import VisualEncoder
from pixelagent_llava.settings import ClipEncoderSettings

SETTING = "visual_encoder.settings.pretrained"
__all__ = ["ClipEncoderSettings", "ClipVisualEncoder"]


class ClipVisualEncoder(nn.Module, VisualEncoder):
    """Frozen CLIP vision tower → (N, C) patch tokens of layer -2 (no CLS), as LLaVA feeds them.

    Parameters are named ``clip.*``; all are frozen and the tower runs in eval mode under
    ``no_grad``, so the part never trains (LISA keeps CLIP frozen) — unless ``train_backbone``
    (tiny models trained from scratch).
    """

    def __init__(self, clip: nn.Module, image_size: int, train_backbone: bool = False) -> None:
        super().__init__()
        self.train_backbone = train_backbone
        self.clip = clip.requires_grad_(train_backbone).eval()
        self.image_size = image_size
        patch = int(clip.config.patch_size)
        self.num_tokens = (image_size // patch) ** 2  # N
        self.out_dim = int(clip.config.hidden_size)  # C_vis

    @classmethod
    def build(cls, settings: ClipEncoderSettings | dict, device: str, dtype: str) -> ClipVisualEncoder:
        """Load (or, tiny, randomly initialise) CLIP and move it to ``device`` / ``dtype``."""
        settings = _settings(settings)
        source = tiny_source(settings.pretrained, SETTING) if settings.tiny else settings.pretrained
        if settings.random_init and not settings.tiny:
            from pixelagent.nn.architectures import CLIP_VISION, architecture

            with seeded_rng(settings.seed), building_on(device, dtype):
                clip = build_clip_vision(None, architecture(CLIP_VISION, source, SETTING), setting_name=SETTING)
        elif source is not None:
            clip = build_clip_vision(source, None, setting_name=SETTING)
        else:
            if not settings.tiny:
                raise ConfigError(f"{SETTING} is null: name a CLIP checkpoint or set tiny: true")
            with seeded_rng(settings.seed):  # building must not move the global RNG
                clip = build_clip_vision(None, TINY_CLIP_CONFIG, setting_name=SETTING)
        explicit = "image_size" in settings.model_fields_set
        size = checked_image_size(settings.image_size, explicit, settings.tiny, clip,
                                  "visual_encoder.settings.image_size")
        return cls(clip, size, settings.train_backbone).to(device=torch_device(device), dtype=torch_dtype(dtype))

    def train(self, mode: bool = True) -> ClipVisualEncoder:
        """A frozen tower stays in eval mode whatever the enclosing model's mode."""
        super().train(mode)
        if not self.train_backbone:
            self.clip.eval()
        return self

    @property
    def cacheable(self) -> bool:
        """Whether :meth:`frozen_features` may be cached: only while the tower is frozen."""
        return not self.train_backbone

    def preprocess(self, images: list[np.ndarray]) -> Tensor:
        """RGB uint8 images → CLIP pixels (B, 3, S, S) on this module's device (float32)."""
        pixels = resize_pixels(images, self.image_size, CLIP_MEAN, CLIP_STD)
        return pixels.to(next(self.parameters()).device)

    def forward(self, pixels: Tensor) -> Tensor:
        """(B, 3, S, S) → (B, N, C_vis); no gradient unless the tower trains."""
        with torch.set_grad_enabled(self.train_backbone and torch.is_grad_enabled()):
            return clip_patch_features(self.clip, pixels)

    def encode_batch(self, images: list[np.ndarray]) -> Tensor:
        """Training path: RGB uint8 images → (B, N, C_vis), detached unless the tower trains."""
        return self(self.preprocess(images))

    def frozen_features(self, images: list[np.ndarray]) -> list[dict[str, Tensor]]:
        """Per image, the (frozen) CLIP tokens (N, C_vis), for a feature cache."""
        with torch.no_grad():
            return [{"tokens": t} for t in self.encode_batch(images)]

    def from_frozen(self, features: list[dict[str, Tensor]]) -> Tensor:
        """``encode_batch`` from cached features: (B, N, C_vis)."""
        return torch.stack([f["tokens"] for f in features]).to(next(self.parameters()).device)

    def encode_many(self, images: list[np.ndarray]) -> list[Tensor]:
        """The images of several sessions opening at once, in one batch: a (N, C_vis) each."""
        with torch.no_grad():
            return list(self.encode_batch(list(images)))

    def encode(self, image: np.ndarray) -> Tensor:
        """One RGB uint8 image (H, W, 3) → (N, C_vis), for a session (computed once per image)."""
        with torch.no_grad():
            return self.encode_batch([image])[0]


def _settings(settings: ClipEncoderSettings | BaseModel | dict) -> ClipEncoderSettings:
    """Validated settings; another model's instance is re-read from the fields it set (so the
    tiny defaults still apply to the sizes left unset)."""
    if isinstance(settings, ClipEncoderSettings):
        return settings
    if isinstance(settings, BaseModel):
        settings = settings.model_dump(exclude_unset=True)
    return ClipEncoderSettings.model_validate(settings)
