"""CLIP as LLaVA-v1 and LISA feed it: the checkpoint's tower, its preprocessing, its layer.

LLaVA-v1 checkpoints do not store the vision tower; ``config.json`` names it
(``mm_vision_tower``: ``openai/clip-vit-large-patch14`` for every LISA v1 release) with the layer
read (``mm_vision_select_layer: -2``) and the features kept (``mm_vision_select_feature``:
``"patch"`` drops the CLS token). ViT-L/14 at 224 px gives 16x16 = 256 tokens of 1024-d (LISA's
"255" offset is these 256 tokens minus the one ``<image>`` placeholder they replace).

Preprocessing is LISA's ``CLIPImageProcessor`` (``chat.py``): the shortest side resized to the
tower's image size with PIL bicubic, the centre square cropped, ``/255`` and CLIP's mean / std.
The SAM branch sees the whole image, the CLIP one only its centre square, as in LISA's training.
``crop: squash`` resizes the whole image to the square instead (pixelagent's ``clip`` encoder's
choice), which a LISA release was not trained with.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from pixelagent.errors import ConfigError
from pixelagent.nn.clip import CLIP_MEAN, CLIP_STD, build_clip_vision, check_rgb, normalize, resize_pixels
from pixelagent.nn.device import building_on, seeded_rng, torch_device, torch_dtype
from pixelagent_llava.checkpoints import quiet_transformers, read_config, resolve_folder
from pixelagent_llava.clip_encoder import ClipVisualEncoder
from pixelagent_llava.settings_v1 import ClipV1Settings

SETTING = "visual_encoder.settings.pretrained"


class ClipV1Encoder(ClipVisualEncoder):
    """Frozen CLIP tower → (N, C) tokens of one hidden layer, from LISA's centre-cropped input."""

    def __init__(self, clip: torch.nn.Module, image_size: int, layer: int = -2, keep_cls: bool = False,
                 crop: str = "center", train_backbone: bool = False) -> None:
        super().__init__(clip, image_size, train_backbone)
        self.layer, self.keep_cls, self.crop = layer, keep_cls, crop
        self.num_tokens += int(keep_cls)

    def preprocess(self, images: list[np.ndarray]) -> Tensor:
        """RGB uint8 images → CLIP pixels (B, 3, S, S) on this module's device (float32)."""
        if self.crop == "squash":
            pixels = resize_pixels(images, self.image_size, CLIP_MEAN, CLIP_STD)
        else:
            pixels = torch.stack([center_crop_pixels(image, self.image_size) for image in images])
        return pixels.to(next(self.parameters()).device)

    def forward(self, pixels: Tensor) -> Tensor:
        """(B, 3, S, S) → (B, N, C_vis); no gradient unless the tower trains."""
        param = next(self.clip.parameters())
        with torch.set_grad_enabled(self.train_backbone and torch.is_grad_enabled()):
            out = self.clip(pixel_values=pixels.to(device=param.device, dtype=param.dtype), output_hidden_states=True)
            features = out.hidden_states[self.layer]
            return features if self.keep_cls else features[:, 1:]


def center_crop_pixels(image: np.ndarray, size: int) -> Tensor:
    """CLIPImageProcessor's default path for one RGB uint8 image → float32 (3, size, size).

    Shortest side → ``size`` (PIL bicubic; the long side ``int(size * long / short)``), the centre
    ``size`` x ``size`` square (top-left at ``(h - size) // 2, (w - size) // 2``), ``/255``,
    then CLIP's normalisation.
    """
    height, width = check_rgb(image).shape[:2]
    if height <= width:
        new_h, new_w = size, int(size * width / height)
    else:
        new_h, new_w = int(size * height / width), size
    resized = np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.Resampling.BICUBIC))
    top, left = (new_h - size) // 2, (new_w - size) // 2  # both >= 0: the short side is `size`
    square = np.array(resized[top:top + size, left:left + size])
    pixels = torch.from_numpy(square).permute(2, 0, 1).float().div_(255.0)
    return normalize(pixels[None], CLIP_MEAN, CLIP_STD)[0].contiguous()


def tower_settings(settings: ClipV1Settings) -> tuple[str, int, bool]:
    """(tower, layer, keep_cls): the settings, else the release's config.json, else LISA's defaults."""
    config: dict[str, Any] = {}
    if settings.release:
        config = read_config(resolve_folder(settings.release, "visual_encoder.settings.release", "LISA release"))
    tower = settings.pretrained or config.get("mm_vision_tower") or config.get("vision_tower") \
        or "openai/clip-vit-large-patch14"
    layer = settings.select_layer if settings.select_layer is not None else int(config.get("mm_vision_select_layer", -2))
    feature = settings.select_feature or config.get("mm_vision_select_feature") or "patch"
    if feature not in ("patch", "cls_patch"):
        raise ConfigError(f"mm_vision_select_feature {feature!r} is not one of patch, cls_patch")
    return str(tower), layer, feature == "cls_patch"


def build_clip_v1(settings: ClipV1Settings, device: str, dtype: str) -> ClipV1Encoder:
    """The tower (loaded, or random with ``load_weights: false``) on ``device`` / ``dtype``."""
    tower, layer, keep_cls = tower_settings(settings)
    if settings.load_weights:
        with quiet_transformers():
            clip = build_clip_vision(tower, None, setting_name=SETTING)
    else:
        with seeded_rng(settings.seed), building_on(device, dtype):
            clip = build_clip_vision(None, vision_architecture(tower), setting_name=SETTING)
    depth = int(clip.config.num_hidden_layers)
    if not -depth - 1 <= layer <= depth:
        raise ConfigError(f"select_layer {layer} is outside the {depth}-layer tower {tower}")
    encoder = ClipV1Encoder(clip, int(clip.config.image_size), layer, keep_cls, settings.crop, settings.train_backbone)
    return encoder.to(device=torch_device(device), dtype=torch_dtype(dtype))


def vision_architecture(tower: str) -> dict[str, Any]:
    """``CLIPVisionConfig`` kwargs of ``tower``: a folder's config.json (a full CLIP's
    ``vision_config`` too), else the built-in config of a known hub id."""
    from pixelagent.nn.architectures import CLIP_VISION, architecture

    config = architecture(CLIP_VISION, tower, SETTING)
    config = dict(config.get("vision_config", config))
    for key in ("model_type", "architectures", "transformers_version", "torch_dtype", "dtype"):
        config.pop(key, None)
    return config
