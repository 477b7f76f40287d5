"""MIRAS's dual visual encoder (paper §4.1, eq. 4): CLIP-L/14 @336 + ConvNeXt-L @768, fused.

    X_H  = image at hr_image_size (768)            → ConvNeXt  → X_H' (M = 48×48 cells, C_hr = 768)
    X_L  = X_H downsampled to clip_image_size (336) → CLIP-L/14 → X_L' (N = 24×24 tokens, C = 1024)
    E'   = X_L' + Attn(Q = X_L', K = V = X_H')      (cross-attention, residual from the query)
    E    = MLP(E') + E'                              → (N, C), CLIP's shape

The output keeps CLIP's token count and width, so LLaVA's projector consumes it unchanged.
Both backbones are frozen; only the fusion (``fusion.*``) trains (``train_backbone`` trains them
too, for tiny models trained from scratch).
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pixelagent.errors import ConfigError
from pixelagent.nn.clip import (
    CLIP_MEAN,
    CLIP_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    TINY_CLIP_CONFIG,
    build_clip_vision,
    checked_image_size,
    clip_patch_features,
    load_pretrained,
    normalize,
    resize_pixels,
    tiny_source,
)
from pixelagent.nn.device import building_on, seeded_rng, torch_device, torch_dtype
from pixelagent.parts import VisualEncoder
from pixelagent_miras.settings import DualEncoderSettings

PREFIX = "visual_encoder.settings."
#: The tiny ConvNeXt: stage widths 16/32/64/128, one block each. At 256 px stage 3 (stride 16)
#: gives 16×16 cells = 2×2 per tiny-CLIP token (8×8), the same ratio as the real model.
TINY_CONVNEXT_CONFIG: dict[str, Any] = {"hidden_sizes": [16, 32, 64, 128], "depths": [1, 1, 1, 1]}
TINY_HR_IMAGE_SIZE = 256
TINY_FUSION_HEADS = 2
_NORMS = {"imagenet": (IMAGENET_MEAN, IMAGENET_STD), "clip": (CLIP_MEAN, CLIP_STD)}


class CrossAttentionFusion(nn.Module):
    """Eq. 4's fusion: (B, N, C) CLIP tokens + (B, M, C_hr) ConvNeXt cells → (B, N, C).

    E' = Q + Attn(LN(Q), K, K) with K = Linear(LN(X_H')): the paper's CrossAttn output taken with
    the usual query residual, so E' is a correction of the CLIP tokens rather than a
    replacement. E = MLP(E') + E', where the MLP block is pre-normed (LayerNorm → Linear(C, 4C)
    → GELU → Linear(4C, C)): CLIP-L's penultimate layer has a few channels with very large
    activations, which would otherwise dominate the MLP's input.

    The attention output projection and the MLP's last Linear start at zero, so a fresh fusion
    returns the CLIP tokens exactly: training starts from what the pretrained LLaVA projector
    knows instead of from scrambled tokens.
    """

    def __init__(self, dim: int, hr_dim: int, heads: int) -> None:
        super().__init__()
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(hr_dim)  # ConvNeXt stage outputs are not normalised
        self.proj_kv = nn.Linear(hr_dim, dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.mlp = nn.Sequential(
            nn.LayerNorm(dim), nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim)
        )
        for layer in (self.attn.out_proj, self.mlp[-1]):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, tokens: Tensor, hr: Tensor) -> Tensor:
        """tokens (B, N, C), hr (B, M, C_hr) → (B, N, C)."""
        kv = self.proj_kv(self.norm_kv(hr))
        attended, _ = self.attn(self.norm_q(tokens), kv, kv, need_weights=False)
        fused = tokens + attended  # E'
        return fused + self.mlp(fused)  # E


def convnext_stage_features(model: nn.Module, pixels: Tensor, stage: int) -> Tensor:
    """Feature map of ConvNeXt stage ``stage`` (1-based): (B, 3, H, W) → (B, C_stage, H/s, W/s).

    transformers' ``ConvNextModel`` returns ``hidden_states`` = (stem output, stage 1, ..., stage
    4): index 0 is the stride-4 stem, index k the output of stage k, with strides 4, 8, 16, 32.
    """
    param = next(model.parameters())
    out = model(pixel_values=pixels.to(device=param.device, dtype=param.dtype),
                output_hidden_states=True)
    return out.hidden_states[stage]


class DualVisualEncoder(nn.Module, VisualEncoder):
    """Frozen CLIP + frozen ConvNeXt, fused by a trainable :class:`CrossAttentionFusion`.

    Why ConvNeXt stage 3 by default: at 768 px its stride-16 map is 48×48 = 2304 cells of 768
    channels, 2×2 high-resolution cells per CLIP token (24×24 grid), the detail Mini-Gemini
    mines. The last stage (stride 32) would give 24×24, no finer than CLIP itself.

    Parameters: ``clip.*`` and ``convnext.*`` (frozen, always eval mode, run under no_grad) and
    ``fusion.*`` (trainable).
    """

    def __init__(self, clip: nn.Module, convnext: nn.Module, *, clip_image_size: int,
                 hr_image_size: int, convnext_stage: int, heads: int,
                 convnext_normalization: str = "imagenet", train_backbone: bool = False) -> None:
        super().__init__()
        self.train_backbone = train_backbone
        self.clip = clip.requires_grad_(train_backbone).eval()
        self.convnext = convnext.requires_grad_(train_backbone).eval()
        self.clip_image_size = clip_image_size
        self.hr_image_size = hr_image_size
        self.convnext_stage = convnext_stage
        self.convnext_mean, self.convnext_std = _NORMS[convnext_normalization]
        self.out_dim = int(clip.config.hidden_size)  # C_vis
        self.num_tokens = (clip_image_size // int(clip.config.patch_size)) ** 2  # N
        if self.out_dim % heads:
            raise ConfigError(f"{PREFIX}fusion_heads = {heads} does not divide CLIP's width "
                              f"{self.out_dim}; pick a divisor (16 for CLIP-L)")
        hr_dim = int(convnext.config.hidden_sizes[convnext_stage - 1])
        self.fusion = CrossAttentionFusion(self.out_dim, hr_dim, heads)

    @classmethod
    def build(cls, settings: DualEncoderSettings | dict, device: str,
              dtype: str) -> DualVisualEncoder:
        """Load (or, tiny / random_init, randomly initialise) both backbones, add a seeded fusion, move it all."""
        s = _settings(settings)
        given = s.model_fields_set
        clip_src = _source(s.clip, s.tiny, "clip")
        convnext_src = _source(s.convnext, s.tiny, "convnext")
        # tiny: the sizes the user left unset take the tiny values instead of the real defaults
        hr_size = TINY_HR_IMAGE_SIZE if s.tiny and "hr_image_size" not in given else s.hr_image_size
        heads = TINY_FUSION_HEADS if s.tiny and "fusion_heads" not in given else s.fusion_heads
        random = s.random_init and not s.tiny
        # One seeded, forked RNG for every random init: reproducible, and the caller's RNG stays put.
        with seeded_rng(s.seed), (building_on(device, dtype) if random else contextlib.nullcontext()):
            clip, convnext = (_random_backbones(s) if random else
                              (build_clip_vision(clip_src, None if clip_src else TINY_CLIP_CONFIG,
                                                 setting_name=PREFIX + "clip"), _convnext(convnext_src)))
            encoder = cls(
                clip,
                convnext,
                clip_image_size=checked_image_size(s.clip_image_size, "clip_image_size" in given,
                                                   s.tiny, clip, PREFIX + "clip_image_size"),
                hr_image_size=hr_size,
                convnext_stage=s.convnext_stage,
                heads=heads,
                convnext_normalization=s.convnext_normalization,
                train_backbone=s.train_backbone,
            )
        return encoder.to(device=torch_device(device), dtype=torch_dtype(dtype))

    def train(self, mode: bool = True) -> DualVisualEncoder:
        """Only the fusion follows ``mode``; frozen backbones stay in eval mode."""
        super().train(mode)
        if not self.train_backbone:
            self.clip.eval()
            self.convnext.eval()
        return self

    @property
    def cacheable(self) -> bool:
        """Whether :meth:`frozen_features` may be cached: only while the backbones are frozen."""
        return not self.train_backbone

    def preprocess(self, images: list[np.ndarray]) -> Tensor:
        """RGB uint8 images → X_H in [0, 1], (B, 3, S_hr, S_hr) float32 on this module's device.

        The image is squashed to a square (see :func:`pixelagent.nn.clip.resize_pixels`);
        normalisation happens in :meth:`forward`, per backbone.
        """
        pixels = resize_pixels(images, self.hr_image_size, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
        return pixels.to(next(self.parameters()).device)

    def forward(self, hr_pixels: Tensor) -> Tensor:
        """X_H in [0, 1] (B, 3, S_hr, S_hr) → E (B, N, C_vis); gradients reach the fusion only."""
        tokens, hr = self._backbones(hr_pixels)
        return self._fuse(tokens, hr)

    def _backbones(self, hr_pixels: Tensor) -> tuple[Tensor, Tensor]:
        """The backbones: CLIP tokens (B, N, C) and ConvNeXt cells (B, M, C_hr); no gradients
        unless they train."""
        with torch.set_grad_enabled(self.train_backbone and torch.is_grad_enabled()):
            return self._run_backbones(hr_pixels)

    def _run_backbones(self, hr_pixels: Tensor) -> tuple[Tensor, Tensor]:
        hr_pixels = hr_pixels.float()
        # X_L is X_H downsampled (paper); antialiased bicubic ≈ the PIL bicubic CLIP was trained on.
        low = F.interpolate(hr_pixels, size=(self.clip_image_size,) * 2, mode="bicubic",
                            align_corners=False, antialias=True).clamp_(0.0, 1.0)
        tokens = clip_patch_features(self.clip, normalize(low, CLIP_MEAN, CLIP_STD))
        hr_map = convnext_stage_features(
            self.convnext, normalize(hr_pixels, self.convnext_mean, self.convnext_std), self.convnext_stage)
        return tokens, hr_map.flatten(2).transpose(1, 2)  # (B, C_hr, h, w) → (B, h·w, C_hr)

    def _fuse(self, tokens: Tensor, hr: Tensor) -> Tensor:
        dtype = self.fusion.proj_kv.weight.dtype
        return self.fusion(tokens.to(dtype), hr.to(dtype))

    def encode_batch(self, images: list[np.ndarray]) -> Tensor:
        """Training path: RGB uint8 images → (B, N, C_vis), differentiable w.r.t. ``fusion.*``."""
        return self(self.preprocess(images))

    def frozen_features(self, images: list[np.ndarray]) -> list[dict[str, Tensor]]:
        """Per image, the frozen backbones' outputs (what a feature cache may keep on disk)."""
        with torch.no_grad():
            tokens, hr = self._backbones(self.preprocess(images))
        return [{"tokens": t, "hr": h} for t, h in zip(tokens, hr)]

    def from_frozen(self, features: list[dict[str, Tensor]]) -> Tensor:
        """``encode_batch`` from cached :meth:`frozen_features`: (B, N, C_vis)."""
        device = next(self.parameters()).device
        tokens = torch.stack([f["tokens"] for f in features]).to(device)
        return self._fuse(tokens, torch.stack([f["hr"] for f in features]).to(device))

    def encode_many(self, images: list[np.ndarray]) -> list[Tensor]:
        """The images of several sessions opening at once, in one batch: a (N, C_vis) each."""
        with torch.no_grad():
            return list(self.encode_batch(list(images)))

    def encode(self, image: np.ndarray) -> Tensor:
        """One RGB uint8 image (H, W, 3) → (N, C_vis), for a session (computed once per image)."""
        with torch.no_grad():
            return self.encode_batch([image])[0]


def _convnext(source: str | None) -> nn.Module:
    """The ConvNeXt checkpoint, or the tiny random one (``source`` None)."""
    from transformers import ConvNextConfig, ConvNextModel

    if source is None:
        return ConvNextModel(ConvNextConfig(**TINY_CONVNEXT_CONFIG)).eval()
    # Fully convolutional: a checkpoint trained at 224 px (the facebook one) runs at 768 px as
    # is. An OpenCLIP ConvNeXt-L (MIRAS / Mini-Gemini) must be converted to the HF
    # ConvNextModel layout first; from_pretrained cannot read open_clip files.
    return load_pretrained(ConvNextModel, source, PREFIX + "convnext")


def _random_backbones(s: DualEncoderSettings) -> tuple[nn.Module, nn.Module]:
    """CLIP and ConvNeXt with their checkpoints' architectures and random weights."""
    from transformers import ConvNextConfig, ConvNextModel

    from pixelagent.nn.architectures import CLIP_VISION, CONVNEXT, architecture

    clip = build_clip_vision(None, architecture(CLIP_VISION, s.clip, PREFIX + "clip"))
    return clip, ConvNextModel(ConvNextConfig(**architecture(CONVNEXT, s.convnext, PREFIX + "convnext"))).eval()


def _source(pretrained: str | None, tiny: bool, name: str) -> str | None:
    """The checkpoint to load for setting ``name``, or None for a tiny random init."""
    if tiny:
        return tiny_source(pretrained, PREFIX + name)
    if pretrained is None:
        raise ConfigError(f"{PREFIX}{name} is null: name a checkpoint or set tiny: true")
    return pretrained


def _settings(settings: DualEncoderSettings | dict) -> DualEncoderSettings:
    """Validated settings (the registry passes the model; direct callers may pass a dict)."""
    if isinstance(settings, DualEncoderSettings):
        return settings
    return DualEncoderSettings.model_validate(settings)
