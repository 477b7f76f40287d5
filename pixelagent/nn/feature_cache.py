"""An on-disk cache of frozen encoder outputs, per image, reused across epochs.

The vision encoders and SAM's image encoder never train, so what they compute for an image is
the same every epoch. Parts that can split their work expose
``frozen_features(images) -> [dict of tensors per image]`` and ``from_frozen(features, ...)``;
the cache stores the first per image (safetensors, keyed by the image's pixels and the part's
settings) and the model rebuilds the batch from it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file


class FeatureCache:
    """``directory/<namespace>/<part>/<image digest>.safetensors``.

    ``namespace`` should change whenever the frozen weights or preprocessing change (the
    model derives it from the preset's part settings), so stale features are never reused.
    """

    def __init__(self, directory: str | os.PathLike, namespace: str) -> None:
        self.root = Path(directory) / namespace
        self.hits = self.misses = 0

    @staticmethod
    def namespace_for(settings: dict) -> str:
        return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def fetch(self, part: str, images: list[np.ndarray],
              compute: Callable[[list[np.ndarray]], list[dict[str, torch.Tensor]]]) -> list[dict[str, torch.Tensor]]:
        """Cached features of each image; the missing ones are computed in one batch and stored."""
        paths = [self.root / part / f"{_digest(image)}.safetensors" for image in images]
        found = {i: load_file(str(p)) for i, p in enumerate(paths) if p.is_file()}
        missing = [i for i in range(len(images)) if i not in found]
        if missing:
            computed = compute([images[i] for i in missing])
            for i, features in zip(missing, computed):
                _save_atomically(paths[i], features)
                found[i] = features
        self.hits += len(images) - len(missing)
        self.misses += len(missing)
        return [found[i] for i in range(len(images))]


def _digest(image: np.ndarray) -> str:
    digest = hashlib.sha1(np.ascontiguousarray(image).tobytes())
    digest.update(str(image.shape).encode())
    return digest.hexdigest()


def _save_atomically(path: Path, features: dict[str, torch.Tensor]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    save_file({k: v.detach().contiguous().cpu() for k, v in features.items()}, str(tmp))
    os.replace(tmp, path)  # concurrent ranks may write the same file: last rename wins, both whole
