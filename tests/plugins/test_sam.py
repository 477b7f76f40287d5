"""The ``sam`` mask-decoder plugin, on the tiny size (CPU, random weights with a fixed seed)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import pixelagent_sam
from pixelagent.errors import ConfigError, InputError, PartError, PixelAgentError, WeightsNotFoundError
from pixelagent.parts import DecoderPrompt, MaskDecoder
from pixelagent.plugins import load_plugins, pm
from pixelagent.presets import Preset
from pixelagent.registry import BuildContext, get_registry
from pixelagent_sam import importing
from pixelagent_sam.checkpoint import missing_weights_message
from pixelagent_sam.part import SamMaskDecoder, build_sam_decoder
from pixelagent_sam.settings import SamSettings
from pixelagent_sam.transforms import (box_to_input_frame, postprocess_logits, preprocess,
                                       resized_shape)

PLUGINS_DIR = str(Path(pixelagent_sam.__file__).resolve().parents[1])
MEAN = np.array([123.675, 116.28, 103.53])
STD = np.array([58.395, 57.12, 57.375])


def context(device: str = "cpu", dtype: str = "float32", **sam_settings) -> BuildContext:
    preset = Preset(name="sam-test", device=device, dtype=dtype, visual_encoder="none", llm="any",
                    alignment="any", mask_decoder={"name": "sam", "settings": sam_settings})
    return BuildContext(preset)


def build(**settings) -> SamMaskDecoder:
    return build_sam_decoder(SamSettings(size="tiny", **settings), context())


def image(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def tiny() -> SamMaskDecoder:
    return build()


def run_python(code: str) -> str:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([PLUGINS_DIR, os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


# -- imports -------------------------------------------------------------------------------------
def test_plugin_module_does_not_import_torch():
    out = run_python("""
        import sys
        import pixelagent_sam
        pixelagent_sam.register_mask_decoders(register=lambda *args, **kwargs: None)
        pixelagent_sam.SamSettings(size="tiny")
        print(sorted(m for m in ("torch", "segment_anything") if m in sys.modules))
    """)
    assert out == "[]"


def test_import_sam_modeling_without_torchvision():
    out = run_python("""
        import sys
        sys.modules["torchvision"] = None  # any `import torchvision` now raises ImportError
        from pixelagent_sam.importing import import_sam_modeling
        modeling = import_sam_modeling()
        assert import_sam_modeling() is modeling
        print(modeling.__name__, modeling.Sam.__name__, modeling.ImageEncoderViT.__name__,
              "segment_anything" in sys.modules)
    """)
    # The stand-in package is gone again, so a later real `import segment_anything` is unaffected.
    assert out == "segment_anything.modeling Sam ImageEncoderViT False"


def test_missing_segment_anything_says_how_to_install(monkeypatch):
    monkeypatch.delitem(sys.modules, "segment_anything.modeling", raising=False)
    monkeypatch.delitem(sys.modules, "segment_anything", raising=False)
    monkeypatch.setattr(importing, "find_spec", lambda name: None)
    with pytest.raises(PixelAgentError, match="pip install segment-anything"):
        importing.import_sam_modeling()


# -- preprocessing and geometry ------------------------------------------------------------------
@pytest.mark.parametrize("size, expected", [
    ((96, 128), (96, 128)),
    ((50, 200), (32, 128)),
    ((480, 640), (96, 128)),
    ((100, 300), (43, 128)),   # 42.67 rounds up
    ((5, 256), (3, 128)),      # 2.5 rounds half up (Python's round() would give 2)
    ((256, 5), (128, 3)),
])
def test_resized_shape(size, expected):
    assert resized_shape(*size, 128) == expected


def test_preprocess_normalises_and_pads_bottom_right():
    picture = np.empty((50, 200, 3), dtype=np.uint8)
    picture[:] = (200, 100, 50)  # uniform, so bilinear resizing keeps every value exactly
    pixels, input_size = preprocess(picture, 128)
    assert pixels.shape == (3, 128, 128) and pixels.dtype == torch.float32
    assert input_size == (32, 128)
    expected = (np.array([200, 100, 50]) - MEAN) / STD
    np.testing.assert_allclose(pixels[:, 0, 0].numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(pixels[:, 31, 127].numpy(), expected, rtol=1e-6)
    assert torch.all(pixels[:, 32:, :] == 0)


def test_preprocess_pads_right_for_portrait_images():
    pixels, input_size = preprocess(image(120, 80), 128)
    assert input_size == (128, 85)
    assert torch.all(pixels[:, :, 85:] == 0) and torch.any(pixels[:, :, 84] != 0)


def test_preprocess_refuses_non_rgb_uint8():
    with pytest.raises(InputError, match="RGB uint8"):
        preprocess(np.zeros((10, 10), dtype=np.uint8), 128)
    with pytest.raises(InputError, match="RGB uint8"):
        preprocess(np.zeros((10, 10, 3), dtype=np.float32), 128)


def test_box_is_mapped_into_the_resized_frame():
    assert box_to_input_frame((10, 20, 110, 40), (50, 200), 128) == pytest.approx((6.4, 12.8, 70.4, 25.6))
    # Rounding the height (2.5 → 3) makes the two scales differ: x by 0.5, y by 0.6.
    assert box_to_input_frame((0, 0, 256, 5), (5, 256), 128) == pytest.approx((0, 0, 128, 3))
    assert box_to_input_frame((2, 1, 4, 2), (5, 256), 128) == pytest.approx((1.0, 0.6, 2.0, 1.2))


def test_postprocess_crops_padding_and_returns_to_original_size():
    low_res = torch.full((2, 1, 64, 64), -5.0)
    low_res[:, :, :24, :] = 5.0  # the top half of the 48 low-res rows that hold the image
    logits = postprocess_logits(low_res, (96, 128), (96, 128), 128)
    assert logits.shape == (2, 96, 128) and logits.dtype == torch.float32
    assert bool((logits[:, :44] > 0).all()) and not bool((logits[:, 52:] > 0).any())


# -- checkpoints ---------------------------------------------------------------------------------
def test_tiny_checkpoint_round_trips_with_the_official_layout(tmp_path, tiny):
    state = tiny.sam.state_dict()
    assert {key.split(".")[0] for key in state} == {"image_encoder", "prompt_encoder", "mask_decoder"}
    for key in ("image_encoder.pos_embed", "image_encoder.patch_embed.proj.weight",
                "image_encoder.blocks.0.attn.rel_pos_h", "prompt_encoder.no_mask_embed.weight",
                "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix",
                "mask_decoder.iou_token.weight", "mask_decoder.mask_tokens.weight",
                "mask_decoder.output_hypernetworks_mlps.0.layers.0.weight"):
        assert key in state
    assert "pixel_mean" not in state  # non-persistent, as in the official files
    assert all(key.startswith("sam.") for key in tiny.state_dict())
    path = tmp_path / "sam_vit_h_4b8939.pth"
    torch.save(state, path)

    loaded = build(checkpoint=str(path), seed=7)  # a different seed: the weights must come from the file
    for key, value in state.items():
        assert torch.equal(loaded.sam.state_dict()[key], value), key
    picture = image(96, 128)
    prompt = [DecoderPrompt("x", embedding=torch.randn(256, generator=torch.Generator().manual_seed(1)))]
    a, b = tiny.embed_image(picture), loaded.embed_image(picture)
    assert torch.equal(a.embedding, b.embedding)
    np.testing.assert_array_equal(tiny.decode(a, prompt, (96, 128))[0].mask,
                                  loaded.decode(b, prompt, (96, 128))[0].mask)


def test_missing_checkpoint_names_the_official_file(tmp_path):
    missing = tmp_path / "weights" / "sam.pth"
    with pytest.raises(WeightsNotFoundError) as caught:
        build_sam_decoder(SamSettings(size="vit_h", checkpoint=str(missing)), context())
    message = str(caught.value)
    assert str(missing) in message and "sam_vit_h_4b8939.pth" in message
    assert "mask_decoder.settings.checkpoint" in message and "Agent(" in message
    assert "sam_vit_l_0b3195.pth" in missing_weights_message("vit_l")
    assert "sam_vit_b_01ec64.pth" in missing_weights_message("vit_b")


def test_full_size_without_checkpoint_needs_random_init():
    with pytest.raises(WeightsNotFoundError, match="random_init"):
        build_sam_decoder(SamSettings(size="vit_h"), context())


def test_random_init_builds_a_full_size():
    part = build_sam_decoder(SamSettings(size="vit_b", random_init=True), context())
    assert part.image_size == 1024 and part.prompt_dim == 256
    assert len(part.sam.image_encoder.blocks) == 12
    assert part.sam.prompt_encoder.image_embedding_size == (64, 64)


def test_checkpoint_of_another_size_is_a_config_error(tmp_path, tiny):
    path = tmp_path / "sam_tiny.pth"
    torch.save(tiny.sam.state_dict(), path)
    with pytest.raises(ConfigError) as caught:
        build_sam_decoder(SamSettings(size="vit_h", checkpoint=str(path)), context())
    message = str(caught.value)
    assert "missing keys image_encoder.blocks.2." in message
    assert "wrong shapes image_encoder.pos_embed (1, 16, 16, 64)" in message
    assert "looks like a SAM tiny checkpoint" in message


def test_checkpoint_with_foreign_keys_is_a_config_error(tmp_path, tiny):
    state = dict(tiny.sam.state_dict())
    del state["mask_decoder.iou_token.weight"]
    state["model.extra.weight"] = torch.zeros(1)
    path = tmp_path / "odd.pth"
    torch.save(state, path)
    with pytest.raises(ConfigError, match=r"missing keys mask_decoder\.iou_token\.weight.*"
                                          r"unexpected keys model\.extra\.weight"):
        build(checkpoint=str(path))


class NotATensor:
    pass


def test_checkpoint_is_loaded_without_running_pickled_code(tmp_path):
    path = tmp_path / "pickled.pth"
    torch.save({"image_encoder.thing": NotATensor()}, path)
    with pytest.raises(ConfigError, match="cannot read SAM checkpoint"):
        build(checkpoint=str(path))


# -- the part ------------------------------------------------------------------------------------
def test_frozen_and_trainable_split(tiny):
    assert isinstance(tiny, MaskDecoder) and isinstance(tiny, torch.nn.Module)
    assert tiny.prompt_dim == 256 and tiny.image_size == 128
    assert not any(p.requires_grad for p in tiny.sam.image_encoder.parameters())
    assert not any(p.requires_grad for p in tiny.sam.prompt_encoder.parameters())
    assert all(p.requires_grad for p in tiny.sam.mask_decoder.parameters())


def test_same_seed_builds_the_same_model(tiny):
    again, other = build(), build(seed=1)
    for key, value in tiny.state_dict().items():
        assert torch.equal(again.state_dict()[key], value), key
    assert not torch.equal(other.sam.mask_decoder.iou_token.weight, tiny.sam.mask_decoder.iou_token.weight)


@pytest.mark.parametrize("height, width", [(96, 128), (120, 80)])
def test_decode_gives_original_size_masks(tiny, height, width):
    picture = image(height, width)
    embedding = tiny.embed_image(picture)
    assert embedding.embedding.shape == (1, 256, 16, 16)
    assert embedding.original_size == (height, width)
    assert torch.equal(embedding.embedding, tiny.embed_image(picture).embedding)  # deterministic
    prompts = [DecoderPrompt("a", embedding=torch.randn(256)),
               DecoderPrompt("b", box=(5.0, 10.0, 60.0, 70.0)),
               DecoderPrompt("c", embedding=torch.randn(1, 256), box=(0.0, 0.0, 20.0, 20.0))]
    predictions = tiny.decode(embedding, prompts, (height, width))
    assert len(predictions) == 3
    for prediction in predictions:
        assert prediction.mask.shape == (height, width) and prediction.mask.dtype == bool
        assert 0.0 <= prediction.score <= 1.0


def test_decode_refuses_bad_prompts_and_sizes(tiny):
    embedding = tiny.embed_image(image(96, 128))
    with pytest.raises(PartError, match="neither an embedding nor a box"):
        tiny.decode(embedding, [DecoderPrompt("empty")], (96, 128))
    with pytest.raises(PartError, match="256 values"):
        tiny.decode(embedding, [DecoderPrompt("short", embedding=torch.zeros(3))], (96, 128))
    with pytest.raises(PartError, match="embed this image first"):
        tiny.decode(embedding, [DecoderPrompt("a", embedding=torch.zeros(256))], (50, 50))


def test_predict_logits_trains_the_decoder_and_the_prompts(tiny):
    tiny.zero_grad(set_to_none=True)
    embeddings = tiny.embed_batch([image(96, 128), image(120, 80, seed=1)])
    assert embeddings.embedding.shape == (2, 256, 16, 16) and not embeddings.embedding.requires_grad
    assert embeddings.input_sizes == [(96, 128), (128, 85)]
    assert embeddings.original_sizes == [(96, 128), (120, 80)]
    prompts = torch.randn(2, 256, requires_grad=True)
    logits = tiny.predict_logits(embeddings, [prompts, torch.zeros(0, 256)])
    assert logits[0].shape == (2, 96, 128) and logits[0].dtype == torch.float32
    assert logits[1].shape == (0, 120, 80)
    logits[0].sigmoid().mean().backward()
    assert prompts.grad is not None and prompts.grad.abs().sum() > 0
    assert tiny.sam.mask_decoder.output_upscaling[0].weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in tiny.sam.image_encoder.parameters())
    assert all(p.grad is None for p in tiny.sam.prompt_encoder.parameters())
    tiny.zero_grad(set_to_none=True)


# -- the prompt gate (an option) ------------------------------------------------------------------
def test_a_new_prompt_gate_leaves_sams_output_unchanged(tiny):
    gated = build(prompt_gate=True)
    assert gated.prompt_gate is not None and tiny.prompt_gate is None
    assert {k for k in gated.state_dict() if not k.startswith("sam.")} == {
        "prompt_gate.scale.weight", "prompt_gate.scale.bias", "prompt_gate.out.weight", "prompt_gate.out.bias"}
    embeddings = tiny.embed_batch([image(96, 128)])
    prompts = torch.randn(3, 256, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(gated.predict_logits(embeddings, [prompts])[0], tiny.predict_logits(embeddings, [prompts])[0])


def test_the_prompt_gate_trains_and_changes_masks_with_the_prompt(tiny):
    gated = build(prompt_gate=True)
    embeddings = gated.embed_batch([image(96, 128)])
    prompts = torch.randn(2, 256, generator=torch.Generator().manual_seed(1), requires_grad=True)
    gated.predict_logits(embeddings, [prompts])[0].sigmoid().mean().backward()
    # zero-initialised output: only its 1x1 convolution receives a gradient on the first step
    assert gated.prompt_gate.out.weight.grad.abs().sum() > 0
    torch.nn.init.normal_(gated.prompt_gate.out.weight, std=0.05)
    gate = gated.prompt_gate(embeddings.embedding, prompts.detach())
    assert gate.shape == (2, 256, 16, 16)
    # the dense prompt differs per prompt and per cell: it depends on both text and image
    assert not torch.allclose(gate[0], gate[1]) and gate[0].std(dim=(1, 2)).abs().sum() > 0
    # decode() (inference) feeds an embedding prompt through the gate as predict_logits does
    with torch.no_grad():
        logits = gated.predict_logits(embeddings, [prompts.detach()[:1]])[0][0]
        mask = gated.decode(embeddings, [DecoderPrompt("a", embedding=prompts.detach()[0])], (96, 128))[0].mask
    assert np.array_equal(mask, (logits > 0).numpy())
    # box prompts do not use it: the same mask with or without the gate
    box = DecoderPrompt("b", box=(5.0, 10.0, 60.0, 70.0))
    assert np.array_equal(gated.decode(embeddings, [box], (96, 128))[0].mask,
                          tiny.decode(embeddings, [box], (96, 128))[0].mask)


def test_tiny_presets_use_the_prompt_gate():
    registry = get_registry()
    for name in ("miras-tiny", "lisa-tiny"):
        assert registry.preset(name).preset.choice("mask_decoder").settings["prompt_gate"] is True


def test_embed_batch_matches_embed_image(tiny):
    pictures = [image(96, 128), image(120, 80, seed=1)]
    batch = tiny.embed_batch(pictures)
    for i, picture in enumerate(pictures):
        assert torch.allclose(batch.embedding[i], tiny.embed_image(picture).embedding[0], atol=1e-5)


def test_bfloat16_build_decodes():
    part = build_sam_decoder(SamSettings(size="tiny"), context(dtype="bfloat16"))
    assert part.dtype == torch.bfloat16
    # kept float32 on purpose (segment-anything multiplies float32 coordinates by it)
    assert part.sam.prompt_encoder.pe_layer.positional_encoding_gaussian_matrix.dtype == torch.float32
    embedding = part.embed_image(image(96, 128))
    assert embedding.embedding.dtype == torch.bfloat16
    predictions = part.decode(embedding, [DecoderPrompt("a", embedding=torch.randn(256)),
                                          DecoderPrompt("b", box=(1.0, 2.0, 30.0, 40.0))], (96, 128))
    assert [p.mask.shape for p in predictions] == [(96, 128), (96, 128)]


# -- registration --------------------------------------------------------------------------------
@pytest.fixture
def registered():
    load_plugins()
    added = not pm.is_registered(pixelagent_sam)  # already there once pyproject wires the entry point
    if added:
        pm.register(pixelagent_sam, name="sam-test")
    try:
        yield get_registry()
    finally:
        if added:
            pm.unregister(name="sam-test")


def test_registered_builder_builds_the_part(registered):
    spec = registered.part("mask_decoder", "sam")
    assert spec.settings is SamSettings
    settings = spec.validate_settings({"size": "tiny", "seed": 3})
    part = spec.builder(settings, context(size="tiny", seed=3))
    assert isinstance(part, SamMaskDecoder) and part.device == torch.device("cpu")
    assert part.dtype == torch.float32 and not part.training


@pytest.mark.parametrize("settings, problem", [
    ({"size": "vit_x"}, "size"),
    ({"size": "tiny", "colour": "red"}, "colour"),
    ({"checkpoint": "/w/sam.pth", "random_init": True}, "not both"),
    ({"seed": -1}, "seed"),
])
def test_invalid_settings_are_config_errors(registered, settings, problem):
    with pytest.raises(ConfigError, match=problem):
        registered.part("mask_decoder", "sam").validate_settings(settings)


# -- pretraining with SAM's own prompts (pretrain-sam-tiny) ---------------------------------------
def test_geometric_box_prompt_matches_inference_with_the_same_box():
    part = build(train_image_encoder=True)
    picture = image(96, 128)
    box = (10.0, 20.0, 70.0, 80.0)
    with torch.no_grad():
        logits, iou = part.geometric_logits(part.embed_batch([picture]), 0, boxes=torch.tensor([box]))
    assert logits.shape == (1, 96, 128) and logits.dtype == torch.float32 and iou.shape == (1,)
    decoded = part.decode(part.embed_image(picture), [DecoderPrompt("box", box=box)], (96, 128))[0]
    assert np.array_equal(decoded.mask, (logits[0] > 0).numpy())


def test_geometric_point_prompts_train_encoder_decoder_and_point_embeddings():
    part = build(train_image_encoder=True)
    part.sam.prompt_encoder.requires_grad_(True)
    embeddings = part.embed_batch([image(96, 128), image(120, 80, seed=1)])
    logits, iou = part.geometric_logits(embeddings, 1, points=torch.tensor([[5.0, 7.0], [60.0, 100.0]]))
    assert logits.shape == (2, 120, 80) and iou.shape == (2,)
    (logits.sigmoid().mean() + iou.sum()).backward()
    assert part.sam.image_encoder.patch_embed.proj.weight.grad.abs().sum() > 0
    assert part.sam.prompt_encoder.point_embeddings[1].weight.grad.abs().sum() > 0  # foreground points
    assert part.sam.mask_decoder.iou_prediction_head.layers[0].weight.grad.abs().sum() > 0


def test_geometric_logits_takes_boxes_or_points(tiny):
    embeddings = tiny.embed_batch([image(96, 128)])
    with pytest.raises(PartError, match="either boxes or points"):
        tiny.geometric_logits(embeddings, 0)
    with pytest.raises(PartError, match="either boxes or points"):
        tiny.geometric_logits(embeddings, 0, boxes=torch.zeros(1, 4), points=torch.zeros(1, 2))


def test_missing_tiny_checkpoint_says_how_to_make_one(tmp_path):
    with pytest.raises(WeightsNotFoundError, match="pretrain-sam-tiny"):
        build(checkpoint=str(tmp_path / "sam_tiny.pth"))
