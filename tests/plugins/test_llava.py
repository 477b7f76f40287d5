"""The LLaVA-NeXT backbone at tiny size: tokens, template, cached generation, checkpoints, LoRA."""

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from transformers import CLIPVisionConfig, LlamaConfig, LlavaNextConfig, LlavaNextForConditionalGeneration

from pixelagent.errors import WeightsNotFoundError
from pixelagent.intent import IntentState
from pixelagent.nn.tokens import VISUAL_POSITION_ID
from pixelagent.parts import LLMRequest
from pixelagent_llava.backbone import build_backbone
from pixelagent_llava.settings import LlavaSettings
from pixelagent_llava.template import Exchange
from pixelagent_llava.tokenizer import build_tiny_tokenizer

VISION_DIM = 64


@pytest.fixture(scope="module")
def backbone():
    return build_backbone(LlavaSettings(tiny=True, max_new_tokens=6), "cpu", "float32", VISION_DIM)


def request(question, history=(), state=None, visual=None):
    visual = torch.randn(16, VISION_DIM, generator=torch.Generator().manual_seed(0)) if visual is None else visual
    return LLMRequest(question=question, history=history, image=np.zeros((4, 4, 3), np.uint8), visual=visual,
                      intent=IntentState(), state={} if state is None else state)


def test_special_tokens_are_single_tokens_and_tokenizer_is_deterministic():
    one, two = build_tiny_tokenizer(), build_tiny_tokenizer()
    assert one.get_vocab() == two.get_vocab()
    ids = one("It is [OBJ]the red label[SEG].", add_special_tokens=False)["input_ids"]
    tokens = one.convert_ids_to_tokens(ids)
    assert "[OBJ]" in tokens and "[SEG]" in tokens
    assert one.decode(ids) == "It is [OBJ]the red label[SEG]."


def test_template_supervises_answers_only(backbone):
    ids, labels = backbone.encode_dialogue([("What is it?", "A bottle."), ("Its label?", "[OBJ]the label[SEG].")])
    template = backbone.template
    assert ids.count(template.image_id) == 1 and ids[0] == template.bos_id
    supervised = [i for i, l in zip(ids, labels) if l != -100]
    text = backbone.tokenizer.decode(supervised)
    assert text == " A bottle.</s> [OBJ]the label[SEG].</s>"
    prompt = backbone.tokenizer.decode([i for i, l in zip(ids, labels) if l == -100])
    assert "USER: <image>\nWhat is it? ASSISTANT:" in prompt and "USER: Its label? ASSISTANT:" in prompt
    exact, _ = template.encode([Exchange("What is it?", answer_ids=(5, 6, template.eos_id))])
    assert exact[-3:] == [5, 6, template.eos_id]


def test_a_generated_answer_read_back_from_its_text_gives_its_own_ids(backbone):
    # a saved session or a dropped cache gives the backbone only the reply's text back; the
    # text starts with the space its first token carries, which must not be doubled
    template = backbone.template
    generated = backbone.tokenizer(" The segmentation shows [OBJ]the red label[SEG].",
                                   add_special_tokens=False)["input_ids"]
    text = backbone.tokenizer.decode(generated)
    assert text.startswith(" ")
    assert template.answer_ids(Exchange("q", text)) == generated + [template.eos_id]
    # a dataset answer has no leading space: the template adds the one after "ASSISTANT:"
    assert template.answer_ids(Exchange("q", text[1:])) == generated + [template.eos_id]
    assert template.answer_ids(Exchange("q", "")) == [template.eos_id]  # the model ended at once


def test_generation_returns_text_states_and_ids_in_step(backbone):
    generation = backbone.respond(request("What is in the image?"))
    n = len(generation.token_ids)
    assert generation.hidden_states.shape == (n, backbone.hidden_size)
    assert backbone.tokenizer.decode(generation.token_ids.tolist()) == generation.text
    assert 1 <= n <= 6


def test_cached_turns_equal_a_full_recompute_and_feed_only_the_new_turn(backbone, monkeypatch):
    from pixelagent.results import Reply, Turn

    state, history = {}, []
    for question in ["What is in the image?", "And the label?"]:
        generation = backbone.respond(request(question, tuple(history), state))
        history.append(Turn(index=len(history) + 1, question=question, reply=Reply(text="", raw_text=generation.text)))
    fed = []
    forward = backbone.language_model.forward
    monkeypatch.setattr(backbone.language_model, "forward",
                        lambda *a, **k: fed.append(k["inputs_embeds"].shape[1]) or forward(*a, **k))
    cached = backbone.respond(request("What does the word say?", tuple(history), state))
    first_feed = fed[0]
    fed.clear()
    fresh_state = {"answers": [list(a) for a in state["answers"][:2]]}
    fresh = backbone.respond(request("What does the word say?", tuple(history), fresh_state))
    assert torch.equal(cached.token_ids, fresh.token_ids)
    assert torch.allclose(cached.hidden_states, fresh.hidden_states, atol=1e-5)
    assert first_feed < fed[0] / 3  # the cache spared the image tokens and the earlier turns


def test_forward_train_expands_visual_tokens_and_aligns_states(backbone):
    ids, labels = backbone.encode_dialogue([("Segment it", "[OBJ]the cup[SEG].")])
    short_ids, short_labels = backbone.encode_dialogue([("Hi", "Hello.")])
    out = backbone.forward_train([ids, short_ids], [labels, short_labels], torch.randn(2, 16, VISION_DIM))
    assert out.lengths == [len(ids) + 15, len(short_ids) + 15]
    assert (out.ids[0] == VISUAL_POSITION_ID).sum() == 16
    assert out.hidden.shape == (2, max(out.lengths), backbone.hidden_size)
    assert torch.isfinite(out.loss) and out.loss > 0
    out.loss.backward()
    assert backbone.llava.lm_head.weight.grad is not None
    text_only = backbone.forward_train([short_ids], [short_labels], None)
    assert text_only.lengths == [len(short_ids)]


def test_trainable_split_is_lora_lm_head_and_embeddings(backbone):
    trainable = {n for n, p in backbone.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or "lm_head" in n or "embed_tokens" in n for n in trainable)
    assert any("q_proj.lora_A" in n for n in trainable) and any("v_proj.lora_B" in n for n in trainable)
    assert not any("k_proj.lora" in n for n in trainable)
    assert not any(p.requires_grad for p in backbone.llava.model.multi_modal_projector.parameters())


def test_lora_merge_keeps_outputs():
    backbone = build_backbone(LlavaSettings(tiny=True, max_new_tokens=4), "cpu", "float32", VISION_DIM)
    with torch.no_grad():
        for name, param in backbone.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)  # make the adapters matter before merging
    ids, labels = backbone.encode_dialogue([("Q?", "A.")])
    visual = torch.randn(1, 16, VISION_DIM)
    before = backbone.forward_train([ids], [labels], visual).hidden
    backbone.merge_lora()
    after = backbone.forward_train([ids], [labels], visual).hidden
    assert torch.allclose(before, after, atol=1e-4)
    assert not any("lora_" in n for n, _ in backbone.named_parameters())


def hub_key(key):
    """transformers-5 names → the names in llava-hf/llava-v1.6-vicuna-7b-hf's safetensors."""
    if key.startswith("lm_head"):
        return "language_model." + key
    if key.startswith("model.language_model."):
        return "language_model.model." + key[len("model.language_model."):]
    if key.startswith("model.vision_tower."):
        return "vision_tower.vision_model." + key[len("model.vision_tower."):]
    return key[len("model."):]


def test_tiny_checkpoint_in_the_hub_layout_loads_through_the_real_loader(tmp_path):
    tokenizer = build_tiny_tokenizer()
    text = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                       num_attention_heads=2, num_key_value_heads=2)
    vision = CLIPVisionConfig(hidden_size=VISION_DIM, intermediate_size=64, num_hidden_layers=1,
                              num_attention_heads=2, image_size=32, patch_size=8)
    config = LlavaNextConfig(text_config=text, vision_config=vision, image_grid_pinpoints=[[32, 32]],
                             image_token_index=tokenizer.convert_tokens_to_ids("<image>"))
    torch.manual_seed(3)
    reference = LlavaNextForConditionalGeneration(config)
    state = {hub_key(k): v.contiguous() for k, v in reference.state_dict().items()}
    assert "language_model.model.layers.0.self_attn.q_proj.weight" in state
    assert "vision_tower.vision_model.embeddings.patch_embedding.weight" in state
    assert "multi_modal_projector.linear_1.weight" in state and "image_newline" in state
    save_file(state, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    config.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)

    loaded = build_backbone(LlavaSettings(pretrained=str(tmp_path), lora={"r": 0}), "cpu", "float32", VISION_DIM)
    got = loaded.llava.state_dict()
    want = reference.state_dict()
    assert torch.equal(got["model.language_model.layers.0.self_attn.q_proj.weight"],
                       want["model.language_model.layers.0.self_attn.q_proj.weight"])
    assert torch.equal(got["model.multi_modal_projector.linear_2.weight"],
                       want["model.multi_modal_projector.linear_2.weight"])
    assert loaded.llava.model.vision_tower is None


def test_missing_weights_name_the_setting(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsNotFoundError, match="llm.settings.pretrained"):
        build_backbone(LlavaSettings(pretrained=str(tmp_path / "absent")), "cpu", "float32", VISION_DIM)


def test_the_template_remembers_pieces_it_tokenised_and_stays_bounded(backbone):
    from pixelagent_llava.template import Exchange, VicunaTemplate, _TokenCache

    template = backbone.template
    fresh = VicunaTemplate(template.tokenizer)
    dialogue = [Exchange(f"question {i} about the [SEG] label", f"It is [OBJ]the label {i}[SEG].") for i in range(6)]
    first = fresh.encode(dialogue)
    calls = []
    original = fresh._plain

    def counting(*args, **kwargs):
        calls.append(args[0])
        return original(*args, **kwargs)

    fresh._plain = counting
    assert fresh.encode(dialogue) == first  # the same ids from memory ...
    assert calls == []  # ... without tokenising anything again
    ids = fresh.prompt_ids("question 0 about the [SEG] label", first=False)
    ids.append(-1)  # a caller changing its list does not change what is remembered
    assert fresh.prompt_ids("question 0 about the [SEG] label", first=False)[-1] != -1

    cache = _TokenCache(budget=10, longest=6)
    for text in ("abcd", "efgh", "ijkl"):
        cache.put((text, True), [1, 2])
    assert cache.chars <= 10 and cache.get(("abcd", True)) is None and cache.get(("ijkl", True)) == (1, 2)
    cache.put(("x" * 7, True), [3])  # too long to keep
    assert cache.get(("x" * 7, True)) is None
