"""Reading SAM checkpoints: the official ``sam_vit_*.pth`` files are plain state dicts.

Their keys are those of ``segment_anything.modeling.Sam`` (``image_encoder.patch_embed.proj.weight``,
``prompt_encoder.pe_layer.positional_encoding_gaussian_matrix``, ``mask_decoder.iou_token.weight``,
...); ``pixel_mean`` / ``pixel_std`` are not stored (non-persistent buffers).
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Mapping
from pathlib import Path

import torch

from pixelagent.errors import ConfigError, WeightsNotFoundError

from .sizes import CHECKPOINT_URL, SIZES

_SHOWN = 4  # how many offending keys an error message lists


def checkpoint_path(checkpoint: str | os.PathLike, size: str) -> Path:
    """The checkpoint's path with ``~`` expanded; raises WeightsNotFoundError if no file is there."""
    path = Path(checkpoint).expanduser()
    if not path.is_file():
        raise WeightsNotFoundError(missing_weights_message(size, path))
    return path


def missing_weights_message(size: str, path: Path | None = None) -> str:
    """Says which file is missing (or that none was given), which one is expected and how to set it."""
    official = SIZES[size].checkpoint_file
    what = f"no SAM checkpoint at {path}" if path else f"no checkpoint given for SAM {size}"
    if official is None:  # tiny: there is nothing official to download
        return (f"{what}; SAM tiny has no official weights: make them with `pixelagent recipe "
                "pretrain-sam-tiny --data DATASET_DIR --out DIR` (stage 0 of the tiny recipes), or "
                "leave checkpoint unset for seeded random weights")
    return (
        f"{what}; expected the official {size} weights, {official} ({CHECKPOINT_URL}{official}). "
        "Point at the file with mask_decoder.settings.checkpoint in the preset, or "
        f'Agent(..., mask_decoder={{"settings": {{"checkpoint": "/path/{official}"}}}})'
        + ("" if path else "; or set random_init: true for random weights (benchmarks only)")
    )


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Load a ``.pth`` state dict onto the CPU without running pickled code (``weights_only``)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as exc:
        raise ConfigError(f"cannot read SAM checkpoint {path}: {exc}".splitlines()[0]) from None
    if not isinstance(state, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise ConfigError(
            f"SAM checkpoint {path} is not a state dict (a mapping of parameter names to tensors); "
            "save one with torch.save(sam.state_dict(), path)"
        )
    return dict(state)


def check_state_dict(
    state: Mapping[str, torch.Tensor], expected: Mapping[str, tuple[int, ...]], size: str, path: Path
) -> None:
    """Raise ConfigError unless ``state`` has exactly the ``expected`` keys with those shapes.

    The message names the first few missing, unexpected and mis-shaped keys and the SAM size the
    checkpoint looks like, so a wrong ``size`` setting is easy to spot.
    """
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    misshaped = [
        f"{k} {tuple(state[k].shape)} (model: {expected[k]})"
        for k in expected
        if k in state and tuple(state[k].shape) != tuple(expected[k])
    ]
    if not (missing or unexpected or misshaped):
        return
    problems = [
        f"{label} {_first(keys)}"
        for label, keys in (("missing keys", missing), ("unexpected keys", unexpected),
                            ("wrong shapes", misshaped))
        if keys
    ]
    raise ConfigError(
        f"SAM checkpoint {path} does not fit size {size!r}: "
        + "; ".join(problems) + f"; {_looks_like(state)}"
    )


def guess_size(state: Mapping[str, torch.Tensor]) -> str | None:
    """The SAM size whose image encoder has this state dict's width and depth, if any."""
    patch = state.get("image_encoder.patch_embed.proj.weight")
    if patch is None:
        return None
    blocks = {m.group(1) for k in state if (m := re.match(r"image_encoder\.blocks\.(\d+)\.", k))}
    for size in SIZES.values():
        shape = (size.embed_dim, size.patch_size, size.depth)
        if shape == (patch.shape[0], patch.shape[-1], len(blocks)):
            return size.name
    return None


def _looks_like(state: Mapping[str, torch.Tensor]) -> str:
    guess = guess_size(state)
    if guess is not None:
        return f"it looks like a SAM {guess} checkpoint: set mask_decoder.settings.size to {guess!r}"
    if not any(k.startswith("image_encoder.") for k in state):
        return "it does not look like a SAM state dict (no image_encoder.* keys; is it wrapped or prefixed?)"
    return "it matches none of the SAM sizes " + ", ".join(SIZES)


def _first(keys: list[str]) -> str:
    shown = ", ".join(keys[:_SHOWN])
    return shown + (f" (and {len(keys) - _SHOWN} more)" if len(keys) > _SHOWN else "")


def strip_prefix(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries of ``state`` under ``prefix`` with it removed: a SAM folded into a larger
    model (LISA's ``model.visual_model.*``) as a plain ``Sam`` state dict."""
    return {key[len(prefix):]: value for key, value in state.items() if key.startswith(prefix)}


def sam_from_state_dict(state: Mapping[str, torch.Tensor], size: str | None = None,
                        source: str = "the state dict") -> torch.nn.Module:
    """A ``segment_anything.modeling.Sam`` holding ``state`` (``Sam.state_dict()`` keys), eval mode.

    ``size`` defaults to the one the image encoder's width and depth say (:func:`guess_size`).
    The model is built on the meta device and the tensors are assigned, not copied, so nothing
    is initialised only to be overwritten (ViT-H has 636 M parameters); the tensors keep their
    device and dtype. ``source`` names where ``state`` came from, for the error message.

    Raises:
        ConfigError: keys or shapes do not fit the size, or no size fits.
    """
    from .modeling import build_sam_model  # modeling imports this module
    from .sizes import PIXEL_MEAN, PIXEL_STD

    size = size or guess_size(state)
    if size is None:
        raise ConfigError(f"{source} is not a SAM state dict of a known size: {_looks_like(state)}")
    with torch.device("meta"):
        sam = build_sam_model(size)
    expected = {k: tuple(v.shape) for k, v in sam.state_dict().items()}
    check_state_dict(state, expected, size, Path(source))
    sam.load_state_dict(dict(state), strict=True, assign=True)
    # the non-persistent buffers are not in any state dict: make them again, off the meta device
    sam.register_buffer("pixel_mean", torch.tensor(PIXEL_MEAN).view(-1, 1, 1), persistent=False)
    sam.register_buffer("pixel_std", torch.tensor(PIXEL_STD).view(-1, 1, 1), persistent=False)
    leftover = [name for name, t in [*sam.named_parameters(), *sam.named_buffers()] if t.is_meta]
    if leftover:
        raise ConfigError(f"{source}: SAM {size} has tensors no state dict sets ({', '.join(leftover[:3])})")
    return sam.eval()
