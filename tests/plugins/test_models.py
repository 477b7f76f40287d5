"""MIRAS and LISA end to end at tiny size: eq. 8 training, persistence, sessions with masks."""

import json

import numpy as np
import pytest
import torch

import fake_plugin
from pixelagent import Agent, Mask
from pixelagent.nn.model import SegmentationModel, SegSample
from pixelagent.registry import get_registry

PRESETS = ["miras-tiny", "lisa-tiny"]
QUESTION, ANSWER = "What is red here?", "It is [OBJ]the red region[SEG]."


def build(name):
    registry = get_registry()
    preset = registry.preset(name).preset.with_overrides(device="cpu")
    return SegmentationModel(registry.build(preset), preset)


def batch():
    image = fake_plugin.make_scene()
    red, blue = fake_plugin.rectangle_mask("red")[None], fake_plugin.rectangle_mask("blue")[None]
    return [SegSample(image, [(QUESTION, ANSWER)], red),
            SegSample(image, [("And the blue one?", "Sure, [OBJ]the blue region[SEG].")], blue)]


def eval_loss(model, samples):
    model.eval()
    with torch.no_grad():
        return model(samples).loss.item()


@pytest.fixture(scope="module", params=PRESETS)
def trained(request):
    """A tiny model overfitted for 40 steps on one dialogue: it answers with the markup."""
    torch.manual_seed(0)
    model = build(request.param)
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=3e-3)
    model.train()
    for _ in range(40):
        loss = model(batch()[:1]).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


@pytest.mark.parametrize("name", PRESETS)
def test_forward_backward_reaches_the_trainable_parts_only(name):
    model = build(name)
    model.train()
    out = model(batch())
    assert torch.isfinite(out.loss) and [tuple(l.shape) for l in out.mask_logits] == [(1, 96, 128)] * 2
    expected = 1.0 * out.text_loss + 2.0 * out.bce_loss + 0.5 * out.dice_loss
    assert torch.allclose(out.loss, expected)
    out.loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    reached = {n: g is not None for n, g in grads.items()
               if n.startswith(("alignment.", "mask_decoder.sam.mask_decoder.")) and "iou_prediction_head" not in n}
    assert reached and all(reached.values())  # (eq. 8 has no IoU term: SAM's IoU head gets none, as in LISA)
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert any(n.startswith("mask_decoder.sam.image_encoder.") for n in frozen)
    assert any(n.startswith("mask_decoder.sam.prompt_encoder.") for n in frozen)
    assert any(n.startswith("visual_encoder.clip.") for n in frozen)
    assert all(p.grad is None for n, p in model.named_parameters() if n in frozen)


@pytest.mark.parametrize("name", PRESETS)
def test_one_optimiser_step_lowers_the_loss(name):
    torch.manual_seed(0)
    model = build(name)
    samples = batch()
    before = eval_loss(model, samples)
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.0)
    model.train()
    loss = model(samples).loss
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    assert eval_loss(model, samples) < before


def test_semantic_region_alignment_is_a_registered_trained_module():
    model = build("miras-tiny")
    keys = model.state_dict().keys()
    assert "alignment.attention.in_proj_weight" in keys and "alignment.out.weight" in keys
    assert model.alignment.attention.num_heads == 8 and model.alignment.attention.embed_dim == 256
    model.train()
    model(batch()).loss.backward()
    assert model.alignment.attention.in_proj_weight.grad.abs().sum() > 0
    assert model.alignment.out.weight.grad.abs().sum() > 0


def test_trainable_split_matches_the_design():
    model = build("miras-tiny")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    allowed = ("alignment.", "mask_decoder.sam.mask_decoder.", "mask_decoder.prompt_gate.", "visual_encoder.fusion.")
    for name in trainable:
        assert name.startswith(allowed) or "lora_" in name or "lm_head" in name or "embed_tokens" in name, name
    assert any("lora_A" in n for n in trainable)


def test_trained_sessions_answer_with_masks_and_encode_once(trained, monkeypatch):
    agent = Agent.from_parts(trained.preset, trained.parts)
    calls = {"encode": 0, "embed": 0}
    encode, embed = agent.parts["visual_encoder"].encode_many, agent.parts["mask_decoder"].embed_image

    def count(key, fn):
        def wrapped(*args):
            calls[key] += 1
            return fn(*args)
        return wrapped

    # a session encodes through encode_many (images of concurrent sessions batch there)
    monkeypatch.setattr(agent.parts["visual_encoder"], "encode_many", count("encode", encode))
    monkeypatch.setattr(agent.parts["mask_decoder"], "embed_image", count("embed", embed))
    session = agent.session(fake_plugin.make_scene())
    replies = [session.ask(QUESTION if i % 2 == 0 else "And again?") for i in range(8)]
    assert calls == {"encode": 1, "embed": 1}
    first = replies[0]
    assert first.raw_text.strip() == ANSWER and first.text == "It is the red region."
    assert first.targets[0].phrase == "the red region" and first.mask.shape == (96, 128)
    assert first.mask.iou(Mask(fake_plugin.rectangle_mask("red"))) > 0.9
    assert all(r.mask is None or r.mask.shape == (96, 128) for r in replies)


def test_save_and_load_give_identical_outputs(trained, tmp_path):
    samples = batch()
    trained.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["preset"]["name"] == trained.preset.name
    adapter = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert (adapter["r"], adapter["lora_alpha"], adapter["lora_dropout"]) == (8, 16, 0.05)
    assert set(adapter["target_modules"]) == {"q_proj", "v_proj"}
    loaded = SegmentationModel.from_pretrained(tmp_path, device="cpu").eval()
    with torch.no_grad():
        a, b = trained(samples), loaded(samples)
    assert torch.equal(a.loss, b.loss)
    assert all(torch.equal(x, y) for x, y in zip(a.mask_logits, b.mask_logits))
    reply = Agent(str(tmp_path)).session(fake_plugin.make_scene()).ask(QUESTION)
    assert reply.phrases == ["the red region"]


def test_merged_lora_gives_the_same_masks(trained, tmp_path):
    samples = batch()[:1]
    with torch.no_grad():
        before = trained(samples).mask_logits[0]
    trained.save_pretrained(tmp_path / "unmerged")
    model = SegmentationModel.from_pretrained(tmp_path / "unmerged", device="cpu").eval()
    model.merge_lora()
    assert not any("lora_" in n for n, _ in model.named_parameters())
    model.save_pretrained(tmp_path / "merged")
    merged = SegmentationModel.from_pretrained(tmp_path / "merged", device="cpu").eval()
    with torch.no_grad():
        after = merged(samples).mask_logits[0]
    assert torch.allclose(before, after, atol=1e-4)


def test_missing_full_size_weights_name_the_file_and_the_fix(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from pixelagent.errors import WeightsNotFoundError

    with pytest.raises(WeightsNotFoundError) as info:
        Agent("miras", device="cpu")
    message = str(info.value)
    assert "settings" in message  # names the setting to point at local weights


FROM_SCRATCH = {"miras-tiny": {"visual_encoder": {"settings": {"train_backbone": True}}},
                "lisa-tiny": {"visual_encoder": {"settings": {"train_backbone": True}}}}


@pytest.mark.parametrize("name", PRESETS)
def test_from_scratch_settings_train_the_backbones_and_bypass_the_feature_cache(name, tmp_path):
    registry = get_registry()
    preset = registry.preset(name).preset.with_overrides(
        device="cpu", **FROM_SCRATCH[name], llm={"settings": {"train_full": True}},
        mask_decoder={"settings": {"train_image_encoder": True}})
    model = SegmentationModel(registry.build(preset), preset)
    model.use_feature_cache(tmp_path / "cache")
    model.train()
    model(batch()).loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    for prefix in ("visual_encoder.clip.encoder.layers.0.", "mask_decoder.sam.image_encoder.blocks.0.",
                   "llm.llava.model.multi_modal_projector.", "llm.llava.model.language_model.base_model.model.layers.0.mlp."):
        reached = [g is not None and g.abs().sum() > 0 for n, g in grads.items() if n.startswith(prefix)]
        assert reached and all(reached), prefix
    assert not any((tmp_path / "cache").rglob("*.safetensors"))  # nothing trainable was cached
    assert model.visual_encoder.training and model.mask_decoder.sam.image_encoder.training


def test_alignment_prompts_start_at_the_scale_of_sams_own_tokens():
    model = build("miras-tiny")
    sam_tokens = model.mask_decoder.sam.mask_decoder.mask_tokens.weight
    encoded = model.llm.encode_dialogue([(QUESTION, ANSWER)])
    with torch.no_grad():
        text = model.llm.forward_train([encoded[0]], [encoded[1]], model._encode([fake_plugin.make_scene()]))
        prompts = torch.cat(model.alignment.embed_batch(text.hidden, text.ids))
    ratio = prompts.std().item() / sam_tokens.std().item()
    assert 0.3 < ratio < 3.0, ratio  # PyTorch's default Linear init gave ~0.05 here


def test_llm_mask_grad_scales_only_the_mask_gradient_into_the_llm():
    from pixelagent.nn.losses import LossWeights

    registry = get_registry()
    preset = registry.preset("miras-tiny").preset.with_overrides(device="cpu", weights=None)
    parts = registry.build(preset)
    grads = {}
    for scale in (1.0, 0.1):
        model = SegmentationModel(parts, preset, LossWeights(text=0.0, bce=1.0, dice=1.0, llm_mask_grad=scale))
        model.train()
        model.zero_grad(set_to_none=True)
        torch.manual_seed(0)  # the same LoRA dropout masks in both runs
        out = model(batch())
        out.loss.backward()
        llm = [p.grad.clone() for p in model.llm.parameters() if p.requires_grad and p.grad is not None]
        grads[scale] = (out.loss.item(), llm, model.alignment.out.weight.grad.clone())
    (loss_1, llm_1, align_1), (loss_01, llm_01, align_01) = grads[1.0], grads[0.1]
    assert loss_1 == loss_01  # the forward pass is the same
    assert llm_1 and all(torch.allclose(b, 0.1 * a, atol=1e-7) for a, b in zip(llm_1, llm_01))
    assert torch.equal(align_1, align_01)  # the alignment still gets the full gradient


def test_auxiliary_phrase_loss_trains_a_head_that_is_never_saved(tmp_path):
    from safetensors.torch import load_file

    from pixelagent.nn.losses import LossWeights

    registry = get_registry()
    preset = registry.preset("miras-tiny").preset.with_overrides(device="cpu", weights=None)
    model = SegmentationModel(registry.build(preset), preset, LossWeights(phrase=1.0))
    model.train()
    out = model(batch())
    # at init the head's distribution is near uniform: the cross-entropy is about log V
    vocabulary = model.phrase_head.out_features
    assert out.phrase_loss is not None and abs(out.phrase_loss.item() - np.log(vocabulary)) < 1.0
    plain = out.loss - out.phrase_loss
    assert torch.allclose(plain, 1.0 * out.text_loss + 2.0 * out.bce_loss + 0.5 * out.dice_loss)
    out.loss.backward()
    assert model.phrase_head.weight.grad.abs().sum() > 0
    assert model.alignment.out.weight.grad.abs().sum() > 0  # it reaches the prompt path
    # the targets are the two phrases' words, and only they are pulled up
    words = {i for phrase in ("the red region", "the blue region")
             for i in model.llm.tokenizer(phrase, add_special_tokens=False)["input_ids"]}
    pulled = set(torch.nonzero(model.phrase_head.bias.grad < 0).flatten().tolist())
    assert pulled == words
    saved = model.save_pretrained(tmp_path / "m")
    assert not any(k.startswith("phrase_head.") for k in load_file(str(saved / "model.safetensors")))
    again = SegmentationModel.from_pretrained(saved, device="cpu")  # no head and nothing missing
    assert again.phrase_head is None
    assert SegmentationModel(registry.build(preset), preset).phrase_head is None  # off by default


def test_phrase_noise_reaches_the_llm_in_training_only(monkeypatch):
    from pixelagent.nn.phrase_noise import PhraseNoise

    model = build("miras-tiny")
    tokenizer = model.llm.tokenizer
    model.phrase_noise = PhraseNoise.from_words([["red", "blue"]], 1.0, tokenizer, model.alignment.seg_id,
                                                model.alignment.obj_id)
    seen, forward_train = [], model.llm.forward_train
    monkeypatch.setattr(model.llm, "forward_train", lambda ids, labels, visual: (
        seen.append((ids[0], labels[0])), forward_train(ids, labels, visual))[1])
    model.train()
    model(batch()[:1])
    model.eval()
    with torch.no_grad():
        model(batch()[:1])
    (noisy, noisy_labels), (clean, clean_labels) = seen
    assert (clean, clean_labels) == model.llm.encode_dialogue([(QUESTION, ANSWER)])
    red, blue = (tokenizer(" " + w, add_special_tokens=False)["input_ids"][0] for w in ("red", "blue"))
    # "What is red here?" keeps its red; the phrase's red becomes blue and leaves the text loss
    assert clean.count(red) == 2 and noisy.count(red) == 1 and noisy.count(blue) == clean.count(blue) + 1
    swapped = noisy.index(blue)
    assert clean[swapped] == red and noisy_labels[swapped] == -100 and clean_labels[swapped] == red


def test_with_phrase_noise_the_phrase_targets_are_the_words_the_llm_read():
    from pixelagent.nn.losses import LossWeights
    from pixelagent.nn.phrase_noise import PhraseNoise

    registry = get_registry()
    preset = registry.preset("miras-tiny").preset.with_overrides(device="cpu", weights=None)
    model = SegmentationModel(registry.build(preset), preset, LossWeights(phrase=1.0))
    tokenizer = model.llm.tokenizer
    model.phrase_noise = PhraseNoise.from_words([["red", "green"]], 1.0, tokenizer, model.alignment.seg_id,
                                                model.alignment.obj_id)
    model.train()
    model(batch()[:1]).loss.backward()
    red, green = (tokenizer(" " + w, add_special_tokens=False)["input_ids"][0] for w in ("red", "green"))
    pulled = set(torch.nonzero(model.phrase_head.bias.grad < 0).flatten().tolist())
    assert green in pulled and red not in pulled  # "the red region" was read as "the green region"
