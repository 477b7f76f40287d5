"""The CLIP (LISA) and dual CLIP + ConvNeXt (MIRAS) visual encoders, tiny on CPU.

Needs ``PYTHONPATH=plugins`` (or the installed distribution) to import the plugin modules.
"""

from __future__ import annotations

import huggingface_hub.constants
import numpy as np
import pytest
import torch
from pydantic import ValidationError

from pixelagent.errors import ConfigError, WeightsNotFoundError
from pixelagent.nn.clip import clip_patch_features
from pixelagent.parts import VisualEncoder
from pixelagent_llava.clip_encoder import ClipEncoderSettings, ClipVisualEncoder
from pixelagent_miras.dual_encoder import (
    CrossAttentionFusion,
    DualEncoderSettings,
    DualVisualEncoder,
    convnext_stage_features,
)


def images(seed: int = 0) -> list[np.ndarray]:
    """Two non-square RGB uint8 images of different sizes."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (37, 61, 3), dtype=np.uint8),
            rng.integers(0, 256, (90, 45, 3), dtype=np.uint8)]


def build_clip(**settings) -> ClipVisualEncoder:
    return ClipVisualEncoder.build({"tiny": True, **settings}, "cpu", "float32")


def build_dual(**settings) -> DualVisualEncoder:
    return DualVisualEncoder.build({"tiny": True, **settings}, "cpu", "float32")


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


@pytest.fixture(scope="module")
def dual() -> DualVisualEncoder:
    return build_dual()


# -- shared contract ---------------------------------------------------------------------------
@pytest.mark.parametrize("build", [build_clip, build_dual])
def test_encode_non_square_images_is_deterministic_and_records_no_gradient(build):
    encoder = build()
    assert isinstance(encoder, VisualEncoder) and isinstance(encoder, torch.nn.Module)
    assert (encoder.num_tokens, encoder.out_dim) == (64, 64)
    first, second = images()
    out = encoder.encode(first)
    assert out.shape == (64, 64) and out.dtype == torch.float32
    assert out.grad_fn is None and not out.requires_grad
    assert torch.equal(out, encoder.encode(first.copy()))
    batch = encoder.encode_batch([first, second])
    assert batch.shape == (2, 64, 64)
    torch.testing.assert_close(batch[0], out)  # batching does not change an image's features
    assert not torch.equal(batch[1], out)


@pytest.mark.parametrize("build", [build_clip, build_dual])
def test_building_leaves_the_global_rng_alone(build):
    state = torch.get_rng_state()
    build()
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize("build", [build_clip, build_dual])
def test_same_seed_same_weights(build):
    a, b, c = build(seed=3).state_dict(), build(seed=3).state_dict(), build(seed=4).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


# -- CLIP (LISA) -------------------------------------------------------------------------------
def test_clip_encoder_is_frozen():
    encoder = build_clip().train()
    assert not encoder.clip.training
    assert all(name.startswith("clip.") and not p.requires_grad
               for name, p in encoder.named_parameters())
    out = encoder.encode_batch(images())
    assert not out.requires_grad


def test_clip_encoder_loads_a_tiny_checkpoint_with_the_real_layout(tmp_path):
    random = build_clip()
    random.clip.save_pretrained(tmp_path)
    for settings in ({"pretrained": str(tmp_path), "image_size": 64},  # the real path, tiny weights
                     {"pretrained": str(tmp_path), "tiny": True}):  # tiny: a local dir is loaded
        loaded = ClipVisualEncoder.build(settings, "cpu", "float32")
        assert torch.equal(loaded.encode(images()[0]), random.encode(images()[0]))


def test_clip_encoder_image_size_must_match_the_checkpoint(tmp_path):
    build_clip().clip.save_pretrained(tmp_path)
    with pytest.raises(ConfigError, match="takes 64 px"):
        ClipVisualEncoder.build({"pretrained": str(tmp_path)}, "cpu", "float32")  # 336 ≠ 64
    with pytest.raises(ConfigError, match="visual_encoder.settings.image_size"):
        build_clip(image_size=128)


@pytest.mark.parametrize("pretrained", ["/nonexistent/dir", "openai/clip-vit-large-patch14-336"])
def test_clip_encoder_missing_weights(pretrained, offline):
    with pytest.raises(WeightsNotFoundError, match="visual_encoder.settings.pretrained"):
        ClipVisualEncoder.build({"pretrained": pretrained}, "cpu", "float32")


def test_clip_settings_are_strict():
    with pytest.raises(ValidationError):
        ClipEncoderSettings.model_validate({"pretrained": "x", "typo": 1})
    with pytest.raises(ConfigError, match="null"):
        ClipVisualEncoder.build({"pretrained": None}, "cpu", "float32")


# -- dual (MIRAS) ------------------------------------------------------------------------------
def test_convnext_stage_indexing_by_shape(dual):
    # hidden_states[k] is stage k's output: strides 4, 8, 16, 32 at 256 px.
    expected = {1: (16, 64, 64), 2: (32, 32, 32), 3: (64, 16, 16), 4: (128, 8, 8)}
    for stage, shape in expected.items():
        with torch.no_grad():
            assert convnext_stage_features(dual.convnext, torch.zeros(1, 3, 256, 256), stage
                                           ).shape == (1, *shape)
    # stage 3 at 256 px: 16×16 cells = 2×2 per CLIP token (8×8), as 48×48 vs 24×24 for the real one
    assert dual.hr_image_size == 256 and dual.fusion.proj_kv.in_features == 64
    assert build_dual(convnext_stage=4).fusion.proj_kv.in_features == 128


def test_real_sizes_on_the_meta_device():
    # CLIP-L/14-336 + ConvNeXt-L shapes without weights or compute: 768 px → stage 3 is 48×48×768
    # (2×2 cells per CLIP token), and the output keeps CLIP's 576 × 1024.
    from transformers import CLIPVisionConfig, CLIPVisionModel, ConvNextConfig, ConvNextModel

    with torch.device("meta"):
        clip = CLIPVisionModel(CLIPVisionConfig(hidden_size=1024, intermediate_size=4096,
                                                num_hidden_layers=24, num_attention_heads=16,
                                                patch_size=14, image_size=336))
        convnext = ConvNextModel(ConvNextConfig(hidden_sizes=[192, 384, 768, 1536],
                                                depths=[3, 3, 27, 3]))
        encoder = DualVisualEncoder(clip, convnext, clip_image_size=336, hr_image_size=768,
                                    convnext_stage=3, heads=16)
        pixels = torch.rand(1, 3, 768, 768)
        assert convnext_stage_features(convnext, pixels, 3).shape == (1, 768, 48, 48)
        assert encoder(pixels).shape == (1, 576, 1024)
    assert (encoder.num_tokens, encoder.out_dim) == (576, 1024)


def test_dual_output_is_exactly_clip_at_init(dual):
    captured = {}
    handle = dual.fusion.register_forward_pre_hook(
        lambda module, args: captured.update(tokens=args[0].clone(), hr=args[1].clone()))
    try:
        out = dual.encode_batch(images())
    finally:
        handle.remove()
    assert out.shape == (2, dual.num_tokens, dual.out_dim) == (2, 64, 64)
    assert captured["hr"].shape == (2, 16 * 16, 64)
    assert torch.equal(out, captured["tokens"])  # zero-init fusion: the CLIP tokens, unchanged
    # and those tokens are CLIP's layer -2 patch features of X_L (X_H downsampled to 64 px)
    pixels = torch.nn.functional.interpolate(dual.preprocess(images()), size=(64, 64),
                                             mode="bicubic", antialias=True).clamp(0, 1)
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(out, clip_patch_features(dual.clip, (pixels - mean) / std))


def test_one_sgd_step_trains_only_the_fusion():
    encoder = build_dual().train()
    assert not encoder.clip.training and not encoder.convnext.training and encoder.fusion.training
    trainable = {n for n, p in encoder.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("fusion.") for n in trainable)
    assert {n.split(".")[0] for n, _ in encoder.named_parameters()} == {"clip", "convnext", "fusion"}
    batch = images()
    before = encoder.encode_batch(batch)
    target = torch.randn_like(before)
    optimiser = torch.optim.SGD([p for p in encoder.parameters() if p.requires_grad], lr=0.5)
    loss = (encoder.encode_batch(batch) - target).pow(2).mean()
    loss.backward()
    for name, param in encoder.named_parameters():
        if not name.startswith("fusion."):
            assert param.grad is None, name
    assert encoder.fusion.mlp[-1].weight.grad.abs().sum() > 0
    assert encoder.fusion.attn.out_proj.weight.grad.abs().sum() > 0
    optimiser.step()
    after = encoder.encode_batch(batch)
    assert not torch.equal(after.detach(), before.detach())
    assert (after - target).pow(2).mean() < loss


def test_fusion_module_shapes_and_zero_init():
    fusion = CrossAttentionFusion(32, 12, heads=4)
    tokens, hr = torch.randn(3, 9, 32), torch.randn(3, 36, 12)
    assert torch.equal(fusion(tokens, hr), tokens)
    torch.nn.init.normal_(fusion.mlp[-1].weight)
    assert fusion(tokens, hr).shape == (3, 9, 32) and not torch.equal(fusion(tokens, hr), tokens)


def test_dual_loads_tiny_checkpoints_with_the_real_layout(tmp_path, dual):
    dual.clip.save_pretrained(tmp_path / "clip")
    dual.convnext.save_pretrained(tmp_path / "convnext")
    assert (tmp_path / "convnext" / "model.safetensors").is_file()
    real_path = {"clip": str(tmp_path / "clip"), "convnext": str(tmp_path / "convnext"),
                 "clip_image_size": 64, "hr_image_size": 256, "fusion_heads": 2}
    expected = dual.encode(images()[1])
    for settings in (real_path, {**real_path, "tiny": True}):
        loaded = DualVisualEncoder.build(settings, "cpu", "float32")
        for part in ("clip", "convnext"):
            ours, theirs = getattr(loaded, part).state_dict(), getattr(dual, part).state_dict()
            assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
        assert torch.equal(loaded.encode(images()[1]), expected)


def test_dual_missing_weights_name_the_setting(tmp_path, offline, dual):
    with pytest.raises(WeightsNotFoundError, match="visual_encoder.settings.clip"):
        DualVisualEncoder.build({"clip": "/nonexistent/dir"}, "cpu", "float32")
    dual.clip.save_pretrained(tmp_path)
    with pytest.raises(WeightsNotFoundError, match="facebook/convnext-large-224-22k-1k.*"
                                                   "visual_encoder.settings.convnext"):
        DualVisualEncoder.build({"clip": str(tmp_path), "clip_image_size": 64}, "cpu", "float32")
    with pytest.raises(WeightsNotFoundError, match="visual_encoder.settings.convnext"):
        build_dual(convnext="/nonexistent/dir")


def test_dual_settings_are_checked():
    for bad in ({"typo": 1}, {"hr_image_size": 100}, {"convnext_stage": 5}, {"fusion_heads": 0}):
        with pytest.raises(ValidationError):
            DualEncoderSettings.model_validate(bad)
    with pytest.raises(ConfigError, match="fusion_heads"):
        build_dual(fusion_heads=3)
