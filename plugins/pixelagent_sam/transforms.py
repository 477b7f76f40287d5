"""SAM's input and output geometry: resize longest side, normalise, pad; boxes; masks back.

Matches segment-anything's ``ResizeLongestSide`` + ``Sam.preprocess`` / ``Sam.postprocess_masks``
without torchvision (PIL does the resize, as torchvision does for PIL images).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from pixelagent.errors import InputError

from .sizes import PIXEL_MEAN, PIXEL_STD

Size = tuple[int, int]


def resized_shape(height: int, width: int, target: int) -> Size:
    """(h, w) after scaling the longest side to ``target``, rounded half up as SAM does."""
    scale = target * 1.0 / max(height, width)
    # max(1, ...) only matters for extreme aspect ratios (SAM itself would fail on a 0-pixel side).
    return max(1, int(height * scale + 0.5)), max(1, int(width * scale + 0.5))


def resize_longest_side(image: np.ndarray, target: int) -> np.ndarray:
    """RGB uint8 (H, W, 3) → uint8 (h, w, 3) with max(h, w) == target, PIL bilinear."""
    height, width = resized_shape(image.shape[0], image.shape[1], target)
    resized = Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(resized)


def preprocess(
    image: np.ndarray, target: int, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, Size]:
    """SAM's input for one image: float32 (3, target, target) on ``device``, and the resized (h, w).

    The RGB uint8 (H, W, 3) image is resized (longest side → ``target``), normalised with SAM's
    pixel mean / std, and zero-padded at the bottom and right to a square.
    """
    _check_image(image)
    resized = resize_longest_side(np.ascontiguousarray(image), target)
    # Move the uint8 pixels, not floats: a quarter of the bytes to copy to the GPU.
    pixels = torch.from_numpy(resized.copy()).to(device).permute(2, 0, 1).float()
    mean = torch.tensor(PIXEL_MEAN, device=pixels.device).view(3, 1, 1)
    std = torch.tensor(PIXEL_STD, device=pixels.device).view(3, 1, 1)
    normalised = (pixels - mean) / std
    height, width = resized.shape[:2]
    return F.pad(normalised, (0, target - width, 0, target - height)), (height, width)


def input_frame_scale(original_size: Size, target: int) -> tuple[float, float]:
    """(sx, sy): multiply original-image x / y pixel coordinates by these for the resized frame."""
    old_h, old_w = original_size
    new_h, new_w = resized_shape(old_h, old_w, target)
    return new_w / old_w, new_h / old_h


def box_to_input_frame(
    box: tuple[float, float, float, float], original_size: Size, target: int
) -> tuple[float, float, float, float]:
    """An XYXY box in original-image pixels → the same box in the resized (unpadded) frame."""
    x0, y0, x1, y1 = (float(v) for v in box)
    sx, sy = input_frame_scale(original_size, target)
    return x0 * sx, y0 * sy, x1 * sx, y1 * sy


def postprocess_logits(
    logits: torch.Tensor, input_size: Size, original_size: Size, target: int
) -> torch.Tensor:
    """Low-resolution mask logits (n, 1, 4e, 4e) → float32 logits (n, H, W) at the original size.

    Upsample to the padded input square, crop the padding away (keeping ``input_size``), then
    resize to ``original_size``; all bilinear with ``align_corners=False``. Differentiable.
    """
    logits = F.interpolate(logits.float(), (target, target), mode="bilinear", align_corners=False)
    logits = logits[..., : input_size[0], : input_size[1]]
    logits = F.interpolate(logits, tuple(original_size), mode="bilinear", align_corners=False)
    return logits[:, 0]


def _check_image(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        got = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise InputError(f"SAM expects an RGB uint8 image of shape (H, W, 3), got {got}")
    if min(image.shape[:2]) < 1:
        raise InputError(f"SAM cannot embed an empty image of shape {image.shape}")
