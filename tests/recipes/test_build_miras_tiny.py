"""``build-miras-tiny`` and ``ablate-miras-tiny``: stage configs, shipping, the ablation table."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pixelagent import Agent
from pixelagent.nn.model import SegmentationModel
from pixelagent.registry import get_registry
from pixelagent.training.config import load_config

RECIPES = Path(__file__).resolve().parents[2] / "recipes"


def load_recipe(name):
    sys.path.insert(0, str(RECIPES))
    try:
        spec = importlib.util.spec_from_file_location(f"recipe_{name}", RECIPES / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(RECIPES))


build = load_recipe("build_miras_tiny")
ablate = load_recipe("ablate_miras_tiny")


@pytest.mark.parametrize("stage", ["stage1", "stage2"])
def test_stage_overrides_point_the_shipped_configs_at_the_work_folder(stage, tmp_path):
    init = tmp_path / "stage1" / "final" if stage == "stage2" else None
    config = load_config(f"miras_tiny/{stage}", build.stage_overrides(stage, tmp_path, init, ["optim.max_steps=7"]))
    assert config.output_dir == str(tmp_path / stage) and config.optim.max_steps == 7
    dirs = {spec["dataset_dir"] for spec in config.data.sources.values()}
    assert dirs and all(d.startswith(str(tmp_path / "data")) for d in dirs)
    assert config.init_from == (str(init) if init else None)
    sam = config.preset_overrides.get("mask_decoder", {}).get("settings", {}).get("checkpoint")
    assert sam == (str(tmp_path / "sam" / "sam_tiny.pth") if stage == "stage1" else None)


@pytest.mark.parametrize("variant, parts", [
    ("miras-tiny", {"visual_encoder": "miras-dual", "alignment": "semantic-region"}),
    ("no-sra", {"visual_encoder": "miras-dual", "alignment": "lisa-projection"}),
    ("no-dual", {"visual_encoder": "clip", "alignment": "semantic-region"}),
    ("lisa-tiny", {"visual_encoder": "clip", "alignment": "lisa-projection"}),
])
def test_ablation_variants_build_the_parts_they_name_and_train_every_weight(variant, parts, tmp_path):
    config = load_config("miras_tiny/stage2", build.stage_overrides("stage2", tmp_path, None, ablate.VARIANTS[variant]))
    registry = get_registry()
    preset = registry.preset(config.preset).preset.with_overrides(**config.preset_overrides, device="cpu")
    assert {kind: preset.choice(kind).name for kind in parts} == parts
    model = SegmentationModel(registry.build(preset), preset)
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    # everything trains but SAM's stage-0 image encoder and its prompt encoder, as in LISA
    assert {n.split(".")[2] for n in frozen} == {"image_encoder", "prompt_encoder"}, frozen[:3]
    assert all(n.startswith("mask_decoder.sam.") for n in frozen), frozen[:3]


def test_ship_writes_a_float16_model_and_a_card_that_agent_loads(tmp_path):
    registry = get_registry()
    preset = registry.preset("miras-tiny").preset.with_overrides(device="cpu", weights=None)
    model = SegmentationModel(registry.build(preset), preset)
    model.preset = preset.with_overrides(weights=str(tmp_path / "on-the-build-machine"))  # as a trained preset may say
    work = tmp_path / "work"
    model.save_pretrained(work / "stage2" / "final")
    (work / "eval").mkdir()
    metrics = {"samples": 12, "no_seg_rate": 0.25,
               "segmentation": {"overall": {"ciou": 0.61, "giou": 0.55, "f1": 0.7},
                                "by_granularity": {"fine": {"ciou": 0.4, "giou": 0.3, "f1": 0.5}}},
               "fine_vs_parent": {"turns": 3, "target_iou": 0.45, "parent_iou": 0.1},
               "response": {"bleu4": 0.2}}
    (work / "eval" / "metrics.json").write_text(json.dumps(metrics))
    log = build.BuildLog(work / "build.json")
    log.record("stage1", seconds=600.0, procs=2, metrics={"last": {"step": 1500}})
    target = tmp_path / "shipped"
    build.ship(work, target, log)
    state = load_file(str(target / "model.safetensors"))
    assert {v.dtype for v in state.values() if v.is_floating_point()} == {torch.float16}
    assert json.loads((target / "config.json").read_text())["preset"]["weights"] is None  # no build-machine path
    card = (target / "MODEL_CARD.md").read_text()
    for text in ("0.610", "no-[SEG] rate 0.250", "| fine | 0.400", "0.450", "0.100", "1500 steps", "10.0 min", build.COMMAND):
        assert text in card, text
    agent = Agent(str(target))
    loaded = dict(agent.parts["mask_decoder"].named_parameters())
    original = dict(model.mask_decoder.named_parameters())
    for name in ("sam.mask_decoder.iou_token.weight", "sam.image_encoder.patch_embed.proj.weight"):
        torch.testing.assert_close(loaded[name], original[name].half().float())
    assert json.loads((work / "build.json").read_text())["ship"]["megabytes"] > 0


def test_ablation_table_has_a_row_per_variant():
    metrics = {"segmentation": {"overall": {"ciou": 0.5, "giou": 0.4, "f1": 0.6},
                                "by_granularity": {"coarse": {"ciou": 0.7}, "fine": {"ciou": 0.2}}},
               "no_seg_rate": 0.1, "fine_vs_parent": {"target_iou": 0.3, "parent_iou": 0.05},
               "response": {"bleu4": 0.12}}
    args = ablate.parse_args(["--steps1", "5", "--steps2", "6", "--eval-limit", "7"])
    table = ablate.ablation_markdown({"miras-tiny": {"metrics": metrics, "seconds": 90},
                                      "no-sra": {"metrics": {**metrics, "segmentation": None}, "seconds": 60}}, args)
    lines = table.splitlines()
    assert lines[2].startswith("| miras-tiny | 0.500 | 0.400 | 0.700 | n/a | 0.200 | 0.600 | 0.100 | 0.300 / 0.050 | 0.120 | 1.5 min |")
    assert lines[3].startswith("| no-sra | n/a")
    assert "stage 1 5 steps + stage 2 6 steps" in table and "first 7 test dialogues" in table


def test_the_ablation_table_goes_into_the_model_card_once(tmp_path):
    card = tmp_path / "MODEL_CARD.md"
    card.write_text("# miras-tiny\n\nbody\n")
    ablate.update_card(card, "| variant |\n|---|\n| a |\n")
    ablate.update_card(card, "| variant |\n|---|\n| b |\n")
    text = card.read_text()
    assert text.startswith("# miras-tiny\n\nbody\n\n## Ablation\n") and "| b |" in text and "| a |" not in text


def test_stage0_runs_once_on_the_three_sets_and_is_logged(tmp_path):
    from pixelagent.data.synth import SynthConfig, synthesize

    for seed, name in enumerate(("prist-synth-narrowing", "prist-synth-referring", "prist-synth")):
        synthesize(tmp_path / "data" / name, SynthConfig(n=20, size=128, seed=seed))
    log = build.BuildLog(tmp_path / "build.json")
    build.pretrain_sam(tmp_path, 2, log)
    weights = tmp_path / "sam" / build.SAM_WEIGHTS
    summary = json.loads((tmp_path / "sam" / "summary.json").read_text())
    assert weights.is_file() and summary["steps"] == 2 and len(summary["data"]) == 3
    record = json.loads((tmp_path / "build.json").read_text())["sam"]
    assert record["steps"] == 2 and record["val_iou_boxes"] == summary["val_iou_boxes"]
    stamp = weights.stat().st_mtime_ns
    build.pretrain_sam(tmp_path, 2, log)  # done already: skipped
    assert weights.stat().st_mtime_ns == stamp
