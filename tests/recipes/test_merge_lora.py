"""``pixelagent recipe merge-lora``: the merged model loads with Agent and answers the same."""

import json

import torch

import fake_plugin
from pixelagent import Agent
from pixelagent.cli import main
from pixelagent.nn.model import SegmentationModel, SegSample
from pixelagent.registry import get_registry


def test_merge_lora_writes_an_agent_loadable_model(tmp_path):
    registry = get_registry()
    preset = registry.preset("miras-tiny").preset.with_overrides(device="cpu")
    model = SegmentationModel(registry.build(preset), preset).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.3)  # adapters that change the outputs
    model.save_pretrained(tmp_path / "trained")
    assert main(["recipe", "merge-lora", str(tmp_path / "trained"), "--out", str(tmp_path / "merged")]) == 0
    config = json.loads((tmp_path / "merged" / "config.json").read_text())
    assert config["preset"]["llm"]["settings"]["lora"]["r"] == 0
    merged = Agent(str(tmp_path / "merged"))
    assert not any("lora_" in n for n, _ in merged.parts["llm"].named_parameters())
    sample = [SegSample(fake_plugin.make_scene(), [("Segment it.", "It is [OBJ]x[SEG].")],
                        fake_plugin.rectangle_mask("red")[None])]
    reloaded = SegmentationModel(merged.parts, merged.preset).eval()
    with torch.no_grad():
        assert torch.allclose(model(sample).loss, reloaded(sample).loss, atol=1e-4)
