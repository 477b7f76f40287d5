"""Training end to end at tiny size: stage 2 from stage 1, exact resume, two processes, learning."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from pixelagent.data.synth import SynthConfig, synthesize
from pixelagent.nn.model import SegmentationModel
from pixelagent.training.config import validate_config
from pixelagent.training.loop import Trainer

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    synthesize(out, SynthConfig(n=24, size=128, seed=0, min_turns=2, max_turns=2))
    return out


def config(synth, output, **optim):
    return {"preset": "miras-tiny", "output_dir": str(output), "device": "cpu", "precision": "fp32", "seed": 0,
            "data": {"sources": {"synth": {"type": "prist", "dataset_dir": str(synth), "split": "train"}}},
            "optim": {"lr": 3e-3, "warmup_steps": 2, "max_steps": 4, "batch_size": 4, "micro_batch_size": 2, **optim},
            "checkpoint": {"every": 2, "keep": 2}, "log": {"every": 1, "tensorboard": False}}


def final_weights(output):
    return load_file(str(Path(output) / "final" / "model.safetensors"))


def test_stage2_starts_from_every_stage1_weight(synth, tmp_path):
    stage1 = Trainer(validate_config(config(synth, tmp_path / "s1", max_steps=2), "s1")).run()
    trained = load_file(str(stage1 / "model.safetensors"))
    stage2 = Trainer(validate_config({**config(synth, tmp_path / "s2"), "init_from": str(stage1)}, "s2"))
    model = stage2.build_model()
    state = model.state_dict()
    assert set(state) == set(trained)
    assert all(torch.equal(state[k], trained[k]) for k in trained)  # nothing re-initialised
    fresh = Trainer(validate_config(config(synth, tmp_path / "s3"), "s3")).build_model().state_dict()
    changed = [k for k in trained if not torch.equal(fresh[k], trained[k])]
    assert any(k.startswith("mask_decoder.sam.mask_decoder.") for k in changed)
    assert any("lora_B" in k for k in changed) and any(k.startswith("alignment.") for k in changed)


def test_metrics_log_and_checkpoints(synth, tmp_path):
    Trainer(validate_config(config(synth, tmp_path, max_steps=5, ), "c")).run()
    rows = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5]
    assert all({"loss", "lr", "samples_per_s"} <= set(r) for r in rows)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-00000002", "step-00000004"]
    assert SegmentationModel.from_pretrained(tmp_path / "final", device="cpu").preset.name == "miras-tiny"
    with pytest.raises(Exception, match="pass --resume"):
        Trainer(validate_config(config(synth, tmp_path, max_steps=5), "c")).run()


def test_a_killed_run_resumes_to_bit_identical_weights(synth, tmp_path):
    steps = {"max_steps": 8}
    Trainer(validate_config(config(synth, tmp_path / "straight", **steps), "a")).run()
    killed = tmp_path / "killed"
    cfg = tmp_path / "killed.yaml"
    cfg.write_text(yaml.safe_dump(config(synth, killed, **steps)))
    # the same torch thread count as this process (an Agent built earlier may have set one):
    # float sums differ between thread counts, and the weights are compared bit for bit
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    process = subprocess.Popen([sys.executable, str(ROOT / "recipes" / "train_stage1.py"), "--config", str(cfg)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.time() + 300
    while not (killed / "checkpoints" / "step-00000002" / "meta.json").exists():
        assert process.poll() is None and time.time() < deadline, "the run ended before its first checkpoint"
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed / "final").exists()
    Trainer(validate_config(config(synth, killed, **steps), "b")).run(resume=True)
    straight, resumed = final_weights(tmp_path / "straight"), final_weights(killed)
    assert set(straight) == set(resumed)
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)


def test_two_processes_with_gloo_agree(synth, tmp_path):
    cfg = tmp_path / "ddp.yaml"
    # with the phrase head and phrase noise on: the head trains under DDP, the ranks' noise differs
    run = {**config(synth, tmp_path / "ddp", max_steps=3, batch_size=4, micro_batch_size=1), "loss": {"phrase": 0.5},
           "phrase_noise": {"p": 0.5, "groups": [["top", "bottom", "centre"], ["left", "right"]]}}
    cfg.write_text(yaml.safe_dump(run))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                             str(ROOT / "recipes" / "train_stage1.py"), "--config", str(cfg)],
                            capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads((tmp_path / "ddp" / f"rank-{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["weights_sha256"] == ranks[1]["weights_sha256"]
    assert [r["world_size"] for r in ranks] == [2, 2] and [r["steps_run"] for r in ranks] == [3, 3]
    assert sum(r["samples_per_step"][0] for r in ranks) == ranks[0]["global_batch"] == 4
    assert (tmp_path / "ddp" / "final" / "model.safetensors").is_file()
    # the step-2 checkpoint holds rank 1's own RNG state, and nothing staged is left behind
    checkpoints = tmp_path / "ddp" / "checkpoints"
    assert sorted(p.name for p in (checkpoints / "step-00000002").iterdir()) == [
        "meta.json", "rng-rank-1.pt", "trainable.safetensors", "trainer_state.pt"]
    assert not list(checkpoints.glob(".*"))


def test_each_rank_resumes_its_own_rng_stream(tmp_path):
    from pixelagent.training import checkpoint as ckpt

    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    root = tmp_path / "checkpoints"
    torch.manual_seed(1)
    ckpt.stage_rank_rng(root, 3, rank=1)  # what rank 1 does before rank 0 saves
    rank1_next = torch.rand(4)
    torch.manual_seed(0)
    path = ckpt.save_checkpoint(root, 3, model, optimizer, scheduler, keep=2, world_size=2)
    rank0_next = torch.rand(4)
    for rank, expected in ((1, rank1_next), (0, rank0_next)):
        torch.manual_seed(99)
        assert ckpt.load_checkpoint(path, model, optimizer, scheduler, rank=rank) == 3
        assert torch.equal(torch.rand(4), expected)



def test_phrase_loss_and_phrase_noise_train_and_stay_out_of_the_saved_model(synth, tmp_path):
    from pixelagent.errors import ConfigError

    cfg = {**config(synth, tmp_path, max_steps=2), "loss": {"phrase": 0.5},
           "phrase_noise": {"p": 0.5, "groups": [["top", "bottom", "centre"], ["left", "right"]]}}
    model = Trainer(validate_config(cfg, "c")).build_model()
    assert model.phrase_head is not None and model.phrase_noise.p == 0.5
    final = Trainer(validate_config(cfg, "c")).run()
    rows = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2] and all(r["phrase_loss"] > 0 for r in rows)
    assert not any(k.startswith("phrase_head.") for k in final_weights(tmp_path))
    loaded = SegmentationModel.from_pretrained(final, device="cpu")
    assert loaded.phrase_head is None and loaded.phrase_noise is None
    bad = {**cfg, "phrase_noise": {"p": 0.5, "groups": [["upper-left", "left"]]}}
    with pytest.raises(ConfigError, match="'upper-left' is"):
        Trainer(validate_config(bad, "b")).build_model()
