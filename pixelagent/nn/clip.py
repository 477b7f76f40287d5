"""CLIP vision helpers shared by the LLaVA/LISA and MIRAS visual encoders.

- :func:`resize_pixels`: RGB uint8 images → one normalised batch (B, 3, S, S);
- :func:`load_pretrained`: ``from_pretrained`` with pixelagent's errors (also used for ConvNeXt);
- :func:`build_clip_vision`: a ``CLIPVisionModel`` from a checkpoint or a tiny random config;
- :func:`clip_patch_features`: the patch tokens LLaVA feeds its projector, (B, N, C).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from pixelagent.errors import ConfigError, InputError, WeightsNotFoundError

#: OpenAI CLIP's normalisation (also ``transformers.image_utils.OPENAI_CLIP_MEAN/STD``).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

#: ImageNet normalisation, which the HF ``facebook/convnext-*`` checkpoints were trained with.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: The tiny CLIP used by tests and the tiny presets: 64 px, 8 px patches → 8×8 = 64 tokens of 64-d.
TINY_CLIP_CONFIG: dict[str, Any] = {
    "image_size": 64,
    "patch_size": 8,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
}


def check_rgb(image: Any) -> np.ndarray:
    """``image`` if it is an RGB uint8 array (H, W, 3); InputError otherwise."""
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
        shape = getattr(image, "shape", None)
        raise InputError(f"expected an RGB image array of shape (H, W, 3), got {type(image).__name__} "
                         f"of shape {shape}")
    if image.dtype != np.uint8:
        raise InputError(f"expected an RGB image of dtype uint8, got {image.dtype}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise InputError(f"the image is empty: shape {image.shape}")
    return image


def resize_pixels(
    images: Sequence[np.ndarray], size: int, mean: Sequence[float], std: Sequence[float]
) -> Tensor:
    """RGB uint8 images (H_i, W_i, 3) → float32 CPU batch (B, 3, size, size), ``(x/255 - mean)/std``.

    Each image is resized to a ``size``×``size`` square with PIL bicubic, **squashing** the aspect
    ratio: the whole image is kept, so a target at the border is never cropped away before it
    can be segmented. (This is our choice for both encoders. For the record: LISA's code runs
    ``CLIPImageProcessor``'s default, shortest side → ``size`` then a centre crop; LLaVA-1.5 pads
    to a square first; LLaVA-1.6 tiles ("anyres").) Pass ``mean=(0, 0, 0), std=(1, 1, 1)`` for
    plain [0, 1] pixels.
    """
    if not images:
        raise InputError("no images to encode")
    batch = np.empty((len(images), size, size, 3), dtype=np.float32)
    for i, image in enumerate(images):
        pil = Image.fromarray(check_rgb(image))
        batch[i] = np.asarray(pil.resize((size, size), Image.Resampling.BICUBIC), dtype=np.float32)
    pixels = torch.from_numpy(batch).permute(0, 3, 1, 2).div_(255.0)
    return normalize(pixels, mean, std).contiguous()


def normalize(pixels: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """(B, 3, H, W) in [0, 1] → ``(pixels - mean) / std`` per channel (same device and dtype)."""
    m = torch.tensor(mean, dtype=pixels.dtype, device=pixels.device).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=pixels.dtype, device=pixels.device).view(1, 3, 1, 1)
    return (pixels - m) / s


def load_pretrained(model_cls: Any, pretrained: str, setting_name: str) -> Any:
    """``model_cls.from_pretrained(pretrained)`` in eval mode, or WeightsNotFoundError.

    ``pretrained`` is a local directory (``config.json`` + ``model.safetensors``, as
    ``save_pretrained`` writes) or a hub id already in the local HF cache. A checkpoint that
    lacks some of the model's weights is refused too: transformers would otherwise initialise
    them at random with only a log line, e.g. when the directory holds another architecture.
    """
    how = (f"fetch it with `hf download {pretrained}` where you have network, or point "
           f"{setting_name} at a local directory holding config.json and model.safetensors")
    try:
        model, info = model_cls.from_pretrained(pretrained, output_loading_info=True)
    except (OSError, ValueError) as exc:
        from pixelagent.errors import single_line

        raise WeightsNotFoundError(
            f"cannot load {model_cls.__name__} weights from {pretrained!r} ({single_line(str(exc), 160)}); {how}"
        ) from None
    missing = sorted(info.get("missing_keys") or ())
    if missing:
        raise WeightsNotFoundError(
            f"the checkpoint {pretrained!r} lacks {len(missing)} {model_cls.__name__} weights "
            f"(e.g. {', '.join(missing[:3])}): is it the right architecture? {how}"
        )
    return model.eval()


def tiny_source(pretrained: str | None, setting_name: str) -> str | None:
    """What a tiny model loads: a local checkpoint directory, or None for a seeded random init.

    Tiny presets keep the real hub id as their default, so a hub id is ignored here; a local
    directory (a tiny checkpoint written by ``save_pretrained``) loads through the real path.
    A path that does not exist is an error rather than a silent random init (a typo, say).
    """
    if pretrained is None:
        return None
    path = Path(pretrained).expanduser()
    if path.is_dir():
        return str(path)
    if pretrained.startswith(("/", "./", "../", "~")) or path.exists():
        raise WeightsNotFoundError(
            f"{setting_name} = {pretrained!r} is not a checkpoint directory; point it at a "
            "directory holding config.json and model.safetensors, or set it to null"
        )
    return None


def build_clip_vision(
    pretrained: str | None,
    tiny: dict[str, Any] | None,
    setting_name: str = "visual_encoder.settings.pretrained",
) -> Any:
    """A ``transformers.CLIPVisionModel`` in eval mode (float32, CPU; the caller moves it).

    Args:
        pretrained: local directory or hub id, e.g. ``openai/clip-vit-large-patch14-336`` (a full
            CLIP checkpoint loads too; its text tower is skipped). Used when given.
        tiny: ``CLIPVisionConfig`` kwargs for a random-init model (e.g. :data:`TINY_CLIP_CONFIG`),
            used when ``pretrained`` is None; the caller seeds the RNG.
        setting_name: the setting that names ``pretrained``, for the error message.

    Raises:
        WeightsNotFoundError: the checkpoint cannot be loaded or is incomplete.
    """
    from transformers import CLIPVisionConfig, CLIPVisionModel

    if pretrained is not None:
        return load_pretrained(CLIPVisionModel, pretrained, setting_name)
    if tiny is None:
        raise ValueError("build_clip_vision needs pretrained or tiny")
    return CLIPVisionModel(CLIPVisionConfig(**tiny)).eval()


def checked_image_size(requested: int, explicit: bool, tiny: bool, model: Any, name: str) -> int:
    """The CLIP input side: the checkpoint's own, which the setting ``name`` must equal.

    We do not interpolate position embeddings, so the side is fixed by the checkpoint. The
    setting is checked when it was given explicitly or the model is not tiny; a tiny model left
    at the real default (336) simply uses its own 64 px.
    """
    native = int(model.config.image_size)
    if (explicit or not tiny) and requested != native:
        raise ConfigError(f"{name} = {requested}, but the CLIP checkpoint takes {native} px "
                          f"images; set {name} to {native}")
    return native


def clip_patch_features(model: Any, pixels: Tensor, layer: int = -2) -> Tensor:
    """Patch tokens of one hidden layer: (B, 3, S, S) → (B, N, C), N = (S / patch)².

    LLaVA's defaults: ``vision_feature_layer=-2`` (the penultimate encoder layer, before any
    post-layernorm) and the "default" select strategy, which drops the CLS token at index 0.
    ``hidden_states`` has num_layers + 1 entries (the embeddings first), so -2 is the output of
    the second-to-last encoder layer.
    """
    param = next(model.parameters())
    pixels = pixels.to(device=param.device, dtype=param.dtype)
    out = model(pixel_values=pixels, output_hidden_states=True)
    return out.hidden_states[layer][:, 1:]
