"""The lean decode step computes exactly what transformers' LlamaModel.forward computes."""

import pytest
import torch
from transformers import DynamicCache, LlamaConfig, LlamaModel

from pixelagent import Agent
from pixelagent.demo import demo_scenes
from pixelagent_llava.backbone import _CACHE_ARG
from pixelagent_llava.lean_step import lean_decoder


def tiny_llama(**overrides) -> LlamaModel:
    torch.manual_seed(0)
    config = dict(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=128)
    config.update(overrides)
    model = LlamaModel(LlamaConfig(**config))
    model.config._attn_implementation = "sdpa"
    return model.eval()


def two_caches(model: LlamaModel, rows: int, past: int) -> tuple[DynamicCache, DynamicCache]:
    """Two equal caches of ``past`` random positions."""
    cache = DynamicCache()
    with torch.no_grad():
        model(inputs_embeds=torch.randn(rows, past, model.config.hidden_size), use_cache=True, **{_CACHE_ARG: cache})
    copy = DynamicCache()
    for index, layer in enumerate(cache.layers):
        copy.update(layer.keys.clone(), layer.values.clone(), index)
    return cache, copy


@pytest.mark.parametrize("overrides", [{}, {"attention_bias": True, "mlp_bias": True}, {"hidden_act": "gelu"}])
@pytest.mark.parametrize("rows,padded", [(1, False), (3, False), (3, True)])
def test_a_lean_step_is_bit_identical_to_the_forward(overrides, rows, padded):
    model = tiny_llama(**overrides)
    lean = lean_decoder(model)
    assert lean is not None
    past = 9
    theirs, ours = two_caches(model, rows, past)
    attention = positions = None
    if padded:  # as the batched decoding pads: rows of different pasts, own positions
        attention = torch.ones(rows, past + 1, dtype=torch.long)
        attention[1, :4], attention[2, :2] = 0, 0
        positions = torch.tensor([[past], [past - 4], [past - 2]])
    for _ in range(3):  # several steps: the caches grow alike
        embeds = torch.randn(rows, 1, model.config.hidden_size)
        extra = {} if attention is None else {"attention_mask": attention, "position_ids": positions}
        with torch.no_grad():
            expected = model(inputs_embeds=embeds, use_cache=True, **{_CACHE_ARG: theirs}, **extra).last_hidden_state[:, -1]
            got = lean.step(embeds, attention, positions, ours)
        assert torch.equal(got, expected)
        for a, b in zip(theirs.layers, ours.layers):
            assert torch.equal(a.keys, b.keys) and torch.equal(a.values, b.values)
        if attention is not None:
            attention = torch.cat([attention, attention.new_ones(rows, 1)], dim=1)
            positions = positions + 1


def test_models_it_does_not_cover_keep_the_transformers_forward():
    assert lean_decoder(tiny_llama(num_key_value_heads=2)) is None  # grouped key/value heads
    eager = tiny_llama()
    eager.config._attn_implementation = "eager"
    assert lean_decoder(eager) is None
    assert lean_decoder(tiny_llama().train()) is None
    watched = tiny_llama()
    watched.layers[0].mlp.register_forward_hook(lambda *args: None)
    assert lean_decoder(watched) is None


def test_the_backbone_takes_it_only_where_it_applies():
    folded = Agent("miras-tiny", device="cpu").parts["llm"]
    assert folded._lean_decoder() is not None
    adapter = Agent("miras-tiny", device="cpu", llm={"settings": {"merge_lora": False}}).parts["llm"]
    assert adapter._lean_decoder() is None  # a peft wrapper runs its adapters in its own forward
    adapter.merge_lora()  # a new, plain language model: looked at again
    lean = adapter._lean_decoder()
    assert lean is not None and lean.model is adapter.language_model
    off = Agent("miras-tiny", device="cpu", llm={"settings": {"lean_decode": False}}).parts["llm"]
    assert off._lean_decoder() is None


def test_answers_are_token_identical_with_and_without_it():
    lean = Agent("miras-tiny", device="cpu")
    plain = Agent("miras-tiny", device="cpu", llm={"settings": {"lean_decode": False}})
    for scene in demo_scenes(3):
        a, b = lean.session(scene.image), plain.session(scene.image)
        for question in scene.requests + ["What colour is it?"]:
            ra, rb = a.ask(question), b.ask(question)
            assert ra.raw_text == rb.raw_text
            assert (ra.mask is None) == (rb.mask is None)
            if ra.mask is not None:
                assert ra.mask.iou(rb.mask) == 1.0
