"""An inference build folds LoRA into the weights and skips random init; answers do not change."""

import pytest

from pixelagent import Agent
from pixelagent.demo import demo_scenes


@pytest.fixture(scope="module")
def agents():
    folded = Agent("miras-tiny", device="cpu")
    adapter = Agent("miras-tiny", device="cpu", llm={"settings": {"merge_lora": False}})
    return folded, adapter


def test_the_folded_build_runs_no_adapter(agents):
    folded, adapter = agents
    assert not any("lora_" in name for name, _ in folded.parts["llm"].named_parameters())
    assert any("lora_" in name for name, _ in adapter.parts["llm"].named_parameters())
    assert folded.parts["llm"].folded_lora.r == 8


def test_folding_lora_gives_token_identical_greedy_answers(agents):
    folded, adapter = agents
    for scene in demo_scenes(4):
        a, b = folded.session(scene.image), adapter.session(scene.image)
        for question in scene.requests + ["What colour is it?"]:
            assert a.ask(question).raw_text == b.ask(question).raw_text


def test_training_builds_keep_the_adapter():
    from pixelagent.training.config import load_config
    from pixelagent.training.loop import Trainer

    config = load_config("miras_tiny/stage1", ["preset_overrides.mask_decoder.settings.checkpoint=null"])
    model = Trainer(config).build_model()
    assert any("lora_" in name for name, p in model.named_parameters() if p.requires_grad)


@pytest.mark.parametrize("settings", [{"sync_every": 4}, {"sync_every": 3, "batch_sessions": False},
                                      {"kv_cache": "static"}])
def test_decode_loop_options_give_token_identical_answers(agents, settings):
    folded, _ = agents
    other = Agent("miras-tiny", device="cpu", llm={"settings": settings})
    for scene in demo_scenes(3):
        a, b = folded.session(scene.image), other.session(scene.image)
        for question in scene.requests + [scene.requests[0]]:  # later turns reuse the cut-back cache
            assert a.ask(question).raw_text == b.ask(question).raw_text


@pytest.mark.slow
def test_compiled_decode_steps_answer_the_same(agents):
    folded, _ = agents
    compiled = Agent("miras-tiny", device="cpu", llm={"settings": {"compile": True, "kv_cache": "static"}})
    scene = demo_scenes(1)[0]
    a, b = folded.session(scene.image), compiled.session(scene.image)
    for question in scene.requests[:2]:
        assert a.ask(question).raw_text == b.ask(question).raw_text
