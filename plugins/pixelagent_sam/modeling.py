"""SAM models built from ``segment_anything.modeling`` classes: one builder per size.

Mirrors segment-anything's ``build_sam``: a private wiring function takes the image-encoder
hyper-parameters of a size (:mod:`.sizes`); the prompt encoder and mask decoder are shared.
"""

from __future__ import annotations

import os
from functools import partial
from typing import TYPE_CHECKING

import torch

from pixelagent.errors import ConfigError

from .checkpoint import check_state_dict, checkpoint_path, read_state_dict
from .importing import import_sam_modeling
from .sizes import PIXEL_MEAN, PIXEL_STD, PROMPT_DIM, SIZES, SamSize

if TYPE_CHECKING:
    from segment_anything.modeling import Sam

Checkpoint = str | os.PathLike | None


def build_sam_vit_h(checkpoint: Checkpoint = None) -> Sam:
    """SAM ViT-H (636 M parameters); ``checkpoint``: e.g. the official ``sam_vit_h_4b8939.pth``."""
    return build_sam_model("vit_h", checkpoint)


def build_sam_vit_l(checkpoint: Checkpoint = None) -> Sam:
    """SAM ViT-L (308 M parameters); ``checkpoint``: e.g. the official ``sam_vit_l_0b3195.pth``."""
    return build_sam_model("vit_l", checkpoint)


def build_sam_vit_b(checkpoint: Checkpoint = None) -> Sam:
    """SAM ViT-B (91 M parameters); ``checkpoint``: e.g. the official ``sam_vit_b_01ec64.pth``."""
    return build_sam_model("vit_b", checkpoint)


def build_sam_tiny(checkpoint: Checkpoint = None) -> Sam:
    """A tiny SAM for CPU tests: 128-pixel input, (256, 16, 16) embedding, the real decoder."""
    return build_sam_model("tiny", checkpoint)


def build_sam_model(size: str, checkpoint: Checkpoint = None) -> Sam:
    """A SAM of ``size`` in eval mode, float32 on the CPU, randomly initialised unless
    ``checkpoint`` (a state dict saved with ``torch.save``) is given.

    Raises:
        WeightsNotFoundError: ``checkpoint`` names no file.
        ConfigError: unknown size, or the checkpoint's keys / shapes do not fit this size.
    """
    spec = _size(size)
    if checkpoint is None:
        return _build_sam(spec).eval()
    path = checkpoint_path(checkpoint, size)
    state = read_state_dict(path)
    # Check against a parameter-free copy first: a bad checkpoint fails in milliseconds, not
    # after initialising hundreds of millions of weights.
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in _build_sam(spec).state_dict().items()}
    check_state_dict(state, expected, size, path)
    sam = _build_sam(spec)
    sam.load_state_dict(state, strict=True)
    return sam.eval()


def _size(name: str) -> SamSize:
    try:
        return SIZES[name]
    except KeyError:
        raise ConfigError(f"unknown SAM size {name!r}; use one of {', '.join(SIZES)}") from None


def _build_sam(size: SamSize) -> Sam:
    """Wire image encoder, prompt encoder and mask decoder for ``size`` (random weights)."""
    m = import_sam_modeling()
    grid = size.embedding_size
    image_encoder = m.ImageEncoderViT(
        img_size=size.image_size,
        patch_size=size.patch_size,
        embed_dim=size.embed_dim,
        depth=size.depth,
        num_heads=size.num_heads,
        mlp_ratio=4,
        out_chans=PROMPT_DIM,
        qkv_bias=True,
        norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
        use_rel_pos=True,
        window_size=size.window_size,
        global_attn_indexes=size.global_attn_indexes,
    )
    prompt_encoder = m.PromptEncoder(
        embed_dim=PROMPT_DIM,
        image_embedding_size=(grid, grid),
        input_image_size=(size.image_size, size.image_size),
        mask_in_chans=16,
    )
    mask_decoder = m.MaskDecoder(
        num_multimask_outputs=3,
        transformer=m.TwoWayTransformer(depth=2, embedding_dim=PROMPT_DIM, mlp_dim=2048, num_heads=8),
        transformer_dim=PROMPT_DIM,
        iou_head_depth=3,
        iou_head_hidden_dim=256,
    )
    return m.Sam(image_encoder, prompt_encoder, mask_decoder,
                 pixel_mean=list(PIXEL_MEAN), pixel_std=list(PIXEL_STD))
