"""FSDP2 (ZeRO-2 / ZeRO-3) on two gloo processes reaches DDP's weights; a sharded run resumes exactly."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from pixelagent import Agent
from pixelagent.data.synth import SynthConfig, synthesize

ROOT = Path(__file__).resolve().parents[2]
#: DDP all-reduces gradients and FSDP reduce-scatters them: the sums round differently in float32,
#: so the weights after a few AdamW steps agree to about 1e-6 of their scale, not bit for bit.
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth-shard")
    synthesize(out, SynthConfig(n=16, size=128, seed=3, min_turns=1, max_turns=2))
    return out


def run(synth, output: Path, strategy: str, max_steps: int, resume: bool = False, validate: bool = False,
        keep: int = 2) -> None:
    config = {"preset": "miras-tiny", "output_dir": str(output), "device": "cpu", "precision": "fp32", "seed": 0,
              "data": {"sources": {"synth": {"type": "prist", "dataset_dir": str(synth), "split": "train"}}},
              "optim": {"lr": 3e-3, "warmup_steps": 1, "max_steps": max_steps, "batch_size": 4,
                        "micro_batch_size": 1},
              "checkpoint": {"every": 2, "keep": keep}, "log": {"every": 1, "tensorboard": False},
              "distributed": {"strategy": strategy}}
    if validate:
        config["data"]["val"] = {"type": "prist", "dataset_dir": str(synth), "split": "train"}
        config["validate"] = {"every": max_steps, "samples": 2}
    path = output.parent / f"{output.name}.yaml"
    path.write_text(yaml.safe_dump(config))
    args = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
            str(ROOT / "recipes" / "train_stage1.py"), "--config", str(path)] + (["--resume"] if resume else [])
    result = subprocess.run(args, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]


def weights(output: Path) -> dict[str, torch.Tensor]:
    return load_file(str(output / "final" / "model.safetensors"))


@pytest.fixture(scope="module")
def ddp_weights(synth, tmp_path_factory):
    output = tmp_path_factory.mktemp("ddp-run") / "ddp"
    run(synth, output, "ddp", 3)
    return weights(output)


@pytest.mark.parametrize("strategy", ["zero2", "zero3"])
def test_sharded_training_reaches_ddps_weights(synth, tmp_path, ddp_weights, strategy):
    run(synth, tmp_path / strategy, strategy, 3, validate=strategy == "zero2")
    ddp, sharded = ddp_weights, weights(tmp_path / strategy)
    assert set(ddp) == set(sharded)
    for name, reference in ddp.items():
        scale = max(1.0, reference.abs().max().item())
        assert (sharded[name] - reference).abs().max().item() <= TOLERANCE * scale, name
    ranks = [json.loads((tmp_path / strategy / f"rank-{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["weights_sha256"] == ranks[1]["weights_sha256"]  # every rank gathered the same model
    # the final model of a sharded run is an ordinary saved model
    agent = Agent(str(tmp_path / strategy / "final"), device="cpu")
    assert agent.session(torch.zeros(64, 64, 3, dtype=torch.uint8).numpy()).ask("what is this?").text is not None


def test_a_sharded_run_resumes_exactly(synth, tmp_path):
    """Resume from the step-2 checkpoint of an uninterrupted zero2 run: the same final weights, bit for bit."""
    run(synth, tmp_path / "whole", "zero2", 6, keep=3)
    resumed = tmp_path / "resumed" / "checkpoints"
    resumed.mkdir(parents=True)
    shutil.copytree(tmp_path / "whole" / "checkpoints" / "step-00000002", resumed / "step-00000002")
    run(synth, tmp_path / "resumed", "zero2", 6, resume=True, keep=3)
    whole, again = weights(tmp_path / "whole"), weights(tmp_path / "resumed")
    assert all(torch.equal(whole[k], again[k]) for k in whole)
    # the checkpoint layout is the same as DDP's, so DDP resumes a sharded checkpoint too
    ddp = tmp_path / "ddp-from-zero2" / "checkpoints"
    ddp.mkdir(parents=True)
    shutil.copytree(tmp_path / "whole" / "checkpoints" / "step-00000004", ddp / "step-00000004")
    run(synth, tmp_path / "ddp-from-zero2", "ddp", 6, resume=True, keep=3)
    other = weights(tmp_path / "ddp-from-zero2")
    assert max((other[k] - whole[k]).abs().max().item() for k in whole) <= TOLERANCE
