"""Hugging Face habits: Hub ids through the normal cache, model cards, peft-loadable adapters."""

import json

import pytest
import torch

from pixelagent import Agent, hookimpl
from pixelagent.agent import resolve_preset
from pixelagent.errors import ConfigError, WeightsNotFoundError
from pixelagent.nn.model import SegmentationModel
from pixelagent.plugins import load_plugins, pm
from pixelagent.registry import get_registry

REVISION = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def tiny_model():
    preset = resolve_preset("miras-tiny").with_overrides(device="cpu", weights=None)
    return SegmentationModel(get_registry().build(preset), preset)


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache (the layout huggingface_hub reads) for this test."""
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path / "hub"


def cache_model(cache, repo_id, model):
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    model.save_pretrained(repo / "snapshots" / REVISION)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(REVISION)


def test_a_hub_id_loads_from_the_cache(hub_cache, tiny_model):
    cache_model(hub_cache, "pixelagent-test/tiny", tiny_model)
    agent = Agent("pixelagent-test/tiny", device="cpu")
    assert agent.preset.name == "miras-tiny" and REVISION in agent.preset.weights
    assert agent.session(torch.zeros(32, 32, 3, dtype=torch.uint8).numpy()).ask("what is it?").text is not None


def test_a_missing_hub_id_offline_is_one_line_naming_hf_download(hub_cache):
    with pytest.raises(WeightsNotFoundError) as info:
        Agent("pixelagent-test/absent")
    message = str(info.value)
    assert "`hf download pixelagent-test/absent`" in message and "HF_HUB_OFFLINE" in message and "\n" not in message


def test_saved_models_carry_a_model_card_and_a_peft_adapter(tmp_path, tiny_model):
    from peft import PeftModel
    from transformers import LlamaModel

    tiny_model.save_pretrained(tmp_path / "model", card={"datasets": ["prist-synth"], "metrics": {"ciou": 0.565}})
    from huggingface_hub import ModelCard

    # read back by the Hub's own parser: model-index results must name task, dataset and metric
    card = ModelCard.load(tmp_path / "model" / "README.md", ignore_metadata_errors=False)
    assert card.data.library_name == "pixelagent" and card.data.datasets == ["prist-synth"]
    (result,) = card.data.eval_results
    assert (result.metric_type, result.metric_value, result.dataset_name) == ("ciou", 0.565, "prist-synth")
    assert "from pixelagent import Agent" in card.text
    adapter = json.loads((tmp_path / "model" / "adapter" / "adapter_config.json").read_text())
    assert adapter["task_type"] == "FEATURE_EXTRACTION" and adapter["peft_type"] == "LORA"
    tiny_model.llm.save_language_model(str(tmp_path / "language_model"))
    loaded = PeftModel.from_pretrained(LlamaModel.from_pretrained(str(tmp_path / "language_model")),
                                       str(tmp_path / "model" / "adapter")).eval()
    embeds = torch.randn(1, 9, loaded.config.hidden_size)
    with torch.no_grad():
        ours = tiny_model.llm.language_model(inputs_embeds=embeds).last_hidden_state
        theirs = loaded(inputs_embeds=embeds).last_hidden_state
    torch.testing.assert_close(theirs, ours)


def test_full_presets_name_their_base_checkpoints_in_the_card():
    from pixelagent.nn.card import model_card

    header = model_card(resolve_preset("miras")).split("---")[1]
    for base in ("llava-hf/llava-v1.6-vicuna-7b-hf", "openai/clip-vit-large-patch14-336",
                 "facebook/convnext-large-224-22k-1k", "facebook/sam-vit-huge"):
        assert base in header


def test_push_to_hub_offline_says_so(tiny_model, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError, match="HF_HUB_OFFLINE"):
        tiny_model.push_to_hub("pixelagent-test/tiny")


class _ReleaseReader:
    """A plugin that recognises another project's checkpoint layout."""

    @hookimpl
    def resolve_model_dir(self, path):
        from pathlib import Path

        if (Path(path) / "release.json").is_file():
            return resolve_preset("miras-tiny").with_overrides(device="cpu")
        return None


def test_other_layouts_are_resolved_by_plugins_or_refused_clearly(tmp_path):
    folder = tmp_path / "release"
    folder.mkdir()
    with pytest.raises(WeightsNotFoundError, match="no installed plugin recognises its layout"):
        resolve_preset(str(folder))
    (folder / "release.json").write_text("{}")
    load_plugins()
    reader = _ReleaseReader()
    pm.register(reader, name="release-reader")
    try:
        assert resolve_preset(str(folder)).name == "miras-tiny"
    finally:
        pm.unregister(name="release-reader")
