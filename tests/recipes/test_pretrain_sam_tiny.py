"""``pixelagent recipe pretrain-sam-tiny``: stage 0 writes a SAM checkpoint the tiny configs load."""

import json

import pytest
import torch

from pixelagent.cli import main
from pixelagent.data.synth import SynthConfig, synthesize
from pixelagent.registry import BuildContext, get_registry
from pixelagent.training.config import load_config
from pixelagent_sam.part import build_sam_decoder
from pixelagent_sam.settings import SamSettings


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    synthesize(out, SynthConfig(n=40, size=128, seed=5, style="narrowing"))
    return out


def pretrain(synth, out, *extra):
    return main(["recipe", "pretrain-sam-tiny", "--data", str(synth), "--out", str(out), "--images", "2",
                 "--prompts", "2", "--val-images", "3", "--threads", "1", "--save-every", "2", *extra])


def test_stage0_writes_an_official_layout_checkpoint_that_sam_tiny_loads(synth, tmp_path):
    out = tmp_path / "sam"
    assert pretrain(synth, out, "--steps", "4") == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 4 and 0.0 <= summary["val_iou_boxes"] <= 1.0 and 0.0 <= summary["val_iou_points"] <= 1.0
    saved = torch.load(out / "sam_tiny.pth", weights_only=True)
    assert {k.split(".")[0] for k in saved} == {"image_encoder", "prompt_encoder", "mask_decoder"}
    preset = get_registry().preset("miras-tiny").preset
    loaded = build_sam_decoder(SamSettings(size="tiny", checkpoint=str(out / "sam_tiny.pth")), BuildContext(preset))
    fresh = build_sam_decoder(SamSettings(size="tiny"), BuildContext(preset))
    key = "image_encoder.patch_embed.proj.weight"
    assert torch.equal(loaded.sam.state_dict()[key], saved[key])
    assert not torch.equal(fresh.sam.state_dict()[key], saved[key])  # it trained
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == []  # logged every 25 steps; 4 steps log nothing but still save


def test_running_in_process_leaves_the_callers_threads_and_rng_alone(synth, tmp_path):
    torch.set_num_threads(2)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    assert pretrain(synth, tmp_path / "sam", "--steps", "1") == 0  # asks for one thread, seed 0
    assert torch.get_num_threads() == 2
    assert torch.equal(torch.rand(3), expected)


def test_rerun_needs_resume_and_resume_continues(synth, tmp_path, capsys):
    out = tmp_path / "sam"
    assert pretrain(synth, out, "--steps", "2") == 0
    first = torch.load(out / "state.pt", weights_only=True)
    assert first["step"] == 2
    assert pretrain(synth, out, "--steps", "4") != 0
    assert "--resume" in capsys.readouterr().err
    assert pretrain(synth, out, "--steps", "4", "--resume") == 0
    assert torch.load(out / "state.pt", weights_only=True)["step"] == 4


def test_stage1_configs_start_from_the_stage0_checkpoint_with_a_frozen_image_encoder():
    for name in ("miras_tiny/stage1", "lisa_tiny/stage1"):
        settings = load_config(name).preset_overrides["mask_decoder"]["settings"]
        assert settings == {"checkpoint": "runs/sam-tiny/sam_tiny.pth"}, name
    for name in ("miras_tiny/stage2", "lisa_tiny/stage2"):
        assert "mask_decoder" not in load_config(name).preset_overrides, name
