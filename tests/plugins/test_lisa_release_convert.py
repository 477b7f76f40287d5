"""``pixelagent convert lisa``: a tiny LISA release → a pixelagent model folder that loads and trains."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

import lisa_tiny_release as tiny
from pixelagent import Agent
from pixelagent.cli import main
from pixelagent.errors import ConfigError
from pixelagent_lisa import release_preset
from pixelagent_lisa.convert import convert_release

QUESTIONS = ["What is in this image?", "Please segment the cup.", "And the spoon on it?"]


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    return tiny.write_release(tmp_path_factory.mktemp("release"), seed=3, scripted=True)


@pytest.fixture(scope="module")
def converted(release, tmp_path_factory):
    out = tmp_path_factory.mktemp("converted") / "lisa-tiny"
    assert main(["convert", "lisa", str(release.folder), "--out", str(out), "--dtype", "float32"]) == 0
    return out


def photo(seed=0):
    return np.random.default_rng(seed).integers(0, 256, (96, 128, 3), dtype=np.uint8)


def answers(agent, seed=0):
    session = agent.session(photo(seed))
    return [(r.raw_text, [t.mask.array for t in r.targets], [t.score for t in r.targets])
            for r in (session.ask(q) for q in QUESTIONS)]


def test_the_folder_is_pixelagents_format_with_every_weight(converted, release):
    assert {"config.json", "model.safetensors", "adapter", "llm", "clip", "preset.yaml"} <= {
        p.name for p in converted.iterdir()}
    state = load_file(str(converted / "model.safetensors"))
    assert torch.equal(state["mask_decoder.sam.mask_decoder.iou_token.weight"],
                       release.state["model.visual_model.mask_decoder.iou_token.weight"])
    assert torch.equal(state["alignment.projection.2.weight"], release.state["model.text_hidden_fcs.0.2.weight"])
    assert torch.equal(state["llm.llava.model.multi_modal_projector.weight"],
                       release.state["model.mm_projector.weight"].float())
    layer = "llm.llava.model.language_model.base_model.model.layers.0.self_attn.q_proj"
    assert torch.equal(state[f"{layer}.base_layer.weight"], release.state["model.layers.0.self_attn.q_proj.weight"].float())
    assert not state[f"{layer}.lora_B.default.weight"].any()  # LoRA r=8 added with a zero B
    assert any(k.startswith("visual_encoder.clip.") for k in state)  # the CLIP the release names, inside


def test_the_converted_model_answers_as_the_release(converted, release):
    direct = answers(Agent(release_preset(release.folder, device="cpu")))
    loaded = answers(Agent(str(converted), device="cpu"))
    assert [a[0] for a in loaded] == [a[0] for a in direct] == ["Sure,[SEG]."] * 3
    for (_, masks_a, scores_a), (_, masks_b, scores_b) in zip(direct, loaded):
        assert all(np.array_equal(a, b) for a, b in zip(masks_a, masks_b)) and scores_a == pytest.approx(scores_b)


def test_agent_loads_a_release_folder_directly(release):
    agent = Agent(str(release.folder), device="cpu")  # recognised by the lisa plugin's resolve_model_dir
    assert agent.preset.llm.name == "llava-v1" and agent.session(photo(1)).ask(QUESTIONS[1]).targets


def test_an_existing_folder_is_kept_unless_forced(converted, release, capsys):
    assert main(["convert", "lisa", str(release.folder), "--out", str(converted)]) == 1
    assert "not empty" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="no saved model"):
        convert_release(str(release.folder), converted / "clip", overwrite=True)


def test_a_bfloat16_conversion_loads(release, tmp_path):
    out = convert_release(str(release.folder), tmp_path / "bf16", lora_r=0)
    state = load_file(str(out / "model.safetensors"))
    assert state["llm.llava.lm_head.weight"].dtype == torch.bfloat16
    assert Agent(str(out), device="cpu").session(photo(2)).ask(QUESTIONS[1]).targets


def test_stage2_training_starts_from_the_converted_release(converted, tmp_path):
    from pixelagent.data.synth import SynthConfig, synthesize
    from pixelagent.training.config import validate_config
    from pixelagent.training.loop import Trainer

    data = tmp_path / "synth"
    synthesize(data, SynthConfig(n=8, size=128, seed=0, min_turns=1, max_turns=1))
    config = {"preset": str(converted / "preset.yaml"), "init_from": str(converted), "output_dir": str(tmp_path / "run"),
              "device": "cpu", "precision": "fp32", "seed": 0,
              "data": {"sources": {"prist": {"type": "prist", "dataset_dir": str(data), "split": "train"}}},
              "optim": {"lr": 1e-4, "warmup_steps": 1, "max_steps": 2, "batch_size": 2, "micro_batch_size": 1},
              "checkpoint": {"every": 2, "keep": 1, "save_frozen": True}, "log": {"every": 1, "tensorboard": False}}
    trainer = Trainer(validate_config(config, "stage2-from-release"))
    model = trainer.build_model()
    start = load_file(str(converted / "model.safetensors"))
    state = model.state_dict()
    assert set(start) <= set(state) and all(torch.equal(state[k], start[k]) for k in start)  # nothing re-initialised
    final = trainer.run()
    trained = load_file(str(final / "model.safetensors"))
    changed = {k.split(".")[0] for k in start if not torch.equal(trained[k], start[k])}
    assert changed == {"llm", "alignment", "mask_decoder"}  # the trainable parts moved; CLIP stayed frozen
    assert torch.equal(trained["mask_decoder.sam.image_encoder.patch_embed.proj.weight"],
                       start["mask_decoder.sam.image_encoder.patch_embed.proj.weight"])
    assert Agent(str(final), device="cpu").session(photo(3)).ask(QUESTIONS[1]).raw_text


def test_the_shipped_stage2_release_config_validates():
    from pixelagent.training.config import load_config

    config = load_config("lisa_7b/stage2_release")
    assert (config.optim.lr, config.optim.batch_size, config.optim.max_steps) == (1e-5, 32, 20_000)
    assert config.init_from == "runs/lisa_7b/release" and config.preset == "runs/lisa_7b/release/preset.yaml"
    assert config.data.ratios == "4:1" and config.checkpoint.save_frozen


def test_the_preset_file_names_the_folder_as_its_weights(converted):
    data = yaml.safe_load((converted / "preset.yaml").read_text())
    assert data["weights"] == str(converted) and data["llm"]["settings"]["load_weights"] is False
    assert data["mask_decoder"] == {"name": "lisa-sam", "settings": {"size": "tiny", "random_init": True}}


def test_convert_help_imports_no_torch():
    probe = ("import sys\nfrom pixelagent.cli import main\ncode = main(['convert', 'lisa', '--help'])\n"
             "heavy = sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules)\n"
             "print('HEAVY', heavy, code)\n")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert "--out" in result.stdout and "HEAVY [] 0" in result.stdout, result.stdout + result.stderr
