"""pixelagent.nn.clip: preprocessing, CLIP patch features and checkpoint loading (tiny, CPU)."""

from __future__ import annotations

import huggingface_hub.constants
import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import CLIPVisionConfig, CLIPVisionModel

from pixelagent.errors import InputError, WeightsNotFoundError
from pixelagent.nn.clip import (
    CLIP_MEAN,
    CLIP_STD,
    TINY_CLIP_CONFIG,
    build_clip_vision,
    clip_patch_features,
    resize_pixels,
    tiny_source,
)

SETTING = "visual_encoder.settings.clip"


@pytest.fixture(scope="module")
def tiny_clip():
    torch.manual_seed(0)
    return CLIPVisionModel(CLIPVisionConfig(**TINY_CLIP_CONFIG)).eval()


@pytest.fixture
def offline(monkeypatch):
    """Offline hub whatever the environment (the constant is read once, at import)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def test_patch_features_are_layer_minus_2_without_cls(tiny_clip):
    pixels = torch.randn(2, 3, 64, 64)
    captured = {}

    def hook(module, args, output):
        captured["out"] = output[0] if isinstance(output, tuple) else output

    # hidden_states[-2] is the output of the second-to-last encoder layer: read it by a hook.
    layers = getattr(tiny_clip, "vision_model", tiny_clip).encoder.layers  # flat in transformers 5
    handle = layers[-2].register_forward_hook(hook)
    try:
        with torch.no_grad():
            feats = clip_patch_features(tiny_clip, pixels)
    finally:
        handle.remove()
    assert feats.shape == (2, 64, 64)  # N = (64 / 8)², C = 64
    torch.testing.assert_close(feats, captured["out"][:, 1:], rtol=0, atol=0)
    with torch.no_grad():
        last = clip_patch_features(tiny_clip, pixels, layer=-1)
    assert not torch.equal(last, feats)


def test_resize_pixels_normalises_a_known_colour():
    image = np.zeros((30, 50, 3), np.uint8)
    image[...] = (255, 0, 128)
    pixels = resize_pixels([image], 16, CLIP_MEAN, CLIP_STD)
    assert pixels.shape == (1, 3, 16, 16) and pixels.dtype == torch.float32
    expected = [(v / 255 - m) / s for v, m, s in zip((255, 0, 128), CLIP_MEAN, CLIP_STD)]
    torch.testing.assert_close(pixels[0, :, 7, 9], torch.tensor(expected), rtol=0, atol=1e-6)


def test_resize_pixels_squashes_keeping_the_whole_image():
    image = np.full((8, 64, 3), 255, np.uint8)
    image[:, :8] = 0  # a black strip at the left edge: a centre crop would lose it
    pixels = resize_pixels([image, image[:, ::-1]], 8, (0, 0, 0), (1, 1, 1))
    assert pixels[0, :, :, 0].max() < 0.1 and pixels[0, :, :, 4:].min() > 0.9
    assert pixels[1, :, :, -1].max() < 0.1


@pytest.mark.parametrize("bad", [np.zeros((4, 4), np.uint8), np.zeros((4, 4, 3), np.float32),
                                 np.zeros((4, 4, 4), np.uint8), np.zeros((0, 4, 3), np.uint8)])
def test_resize_pixels_rejects_non_rgb_uint8(bad):
    with pytest.raises(InputError):
        resize_pixels([bad], 8, CLIP_MEAN, CLIP_STD)


def test_tiny_checkpoint_with_the_real_layout_loads_identically(tiny_clip, tmp_path):
    tiny_clip.save_pretrained(tmp_path)
    assert {"config.json", "model.safetensors"} <= {p.name for p in tmp_path.iterdir()}
    loaded = build_clip_vision(str(tmp_path), None, setting_name=SETTING)
    assert isinstance(loaded, CLIPVisionModel) and not loaded.training
    assert loaded.state_dict().keys() == tiny_clip.state_dict().keys()
    pixels = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(clip_patch_features(loaded, pixels),
                                   clip_patch_features(tiny_clip, pixels), rtol=0, atol=0)


def test_tiny_random_build():
    model = build_clip_vision(None, TINY_CLIP_CONFIG)
    assert model.config.hidden_size == 64 and not model.training


@pytest.mark.parametrize("pretrained", ["/nonexistent/dir", "openai/clip-vit-large-patch14-336"])
def test_missing_weights_name_the_checkpoint_and_the_setting(pretrained, offline):
    with pytest.raises(WeightsNotFoundError) as info:
        build_clip_vision(pretrained, None, setting_name=SETTING)
    assert pretrained in str(info.value) and SETTING in str(info.value)


def test_an_incomplete_checkpoint_is_refused(tiny_clip, tmp_path, offline):
    # transformers would fill the missing weight at random with a log line; we refuse instead.
    tiny_clip.save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    dropped = next(k for k in weights if k.endswith("patch_embedding.weight"))
    del weights[dropped]
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(WeightsNotFoundError, match="lacks 1 CLIPVisionModel weights") as info:
        build_clip_vision(str(tmp_path), None, setting_name=SETTING)
    assert SETTING in str(info.value)


def test_tiny_source(tmp_path):
    assert tiny_source(None, SETTING) is None
    assert tiny_source("openai/clip-vit-large-patch14-336", SETTING) is None  # hub id: random init
    assert tiny_source(str(tmp_path), SETTING) == str(tmp_path)  # a local dir loads
    with pytest.raises(WeightsNotFoundError, match=SETTING):
        tiny_source("/nonexistent/dir", SETTING)  # a typo must not fall back to random weights
