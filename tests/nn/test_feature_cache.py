"""The frozen-feature cache gives the same losses and gradients, from disk on the second pass."""

import pytest
import torch

import fake_plugin
from pixelagent.nn.model import SegmentationModel, SegSample
from pixelagent.registry import get_registry


def build(name):
    registry = get_registry()
    preset = registry.preset(name).preset.with_overrides(device="cpu")
    return SegmentationModel(registry.build(preset), preset).eval()


def batch():
    image = fake_plugin.make_scene()
    other = fake_plugin.make_scene(64, 80)
    return [SegSample(image, [("Segment the red.", "It is [OBJ]red[SEG].")], fake_plugin.rectangle_mask("red")[None]),
            SegSample(other, [("Hi?", "Hello.")], torch.zeros(0, 64, 80, dtype=torch.bool).numpy())]


@pytest.mark.parametrize("name", ["miras-tiny", "lisa-tiny"])
def test_cached_features_give_identical_losses_and_gradients(name, tmp_path):
    plain, cached = build(name), build(name)
    cached.use_feature_cache(tmp_path)
    reference = plain(batch())
    reference.loss.backward()
    for round_ in range(2):
        cached.zero_grad()
        out = cached(batch())
        out.loss.backward()
        assert torch.equal(out.loss, reference.loss), round_
    grads = dict(plain.named_parameters())
    for n, p in cached.named_parameters():
        if p.grad is not None:
            assert torch.allclose(p.grad, grads[n].grad, atol=1e-6), n
    cache = cached.feature_cache
    assert (cache.misses, cache.hits) == (4, 4)  # 2 images x 2 parts computed once, then read
    assert len(list(tmp_path.rglob("*.safetensors"))) == 4


def test_another_part_setting_uses_another_namespace(tmp_path):
    a, b = build("miras-tiny"), build("miras-tiny")
    a.use_feature_cache(tmp_path)
    b.preset = b.preset.with_overrides(mask_decoder={"settings": {"seed": 1}})
    b.use_feature_cache(tmp_path)
    assert a.feature_cache.root != b.feature_cache.root
