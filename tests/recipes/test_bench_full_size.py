"""bench-full-size: the GPU training benchmark's code path, run at tiny size on the CPU."""

import json

from pixelagent.recipes import run_recipe


def test_tiny_run_reports_every_figure(capsys):
    code = run_recipe("bench-full-size", ["--tiny", "--steps", "2", "--stages", "stage1", "stage2", "--json",
                                          "--precision", "bf16-mixed"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)  # stdout holds the JSON alone; progress went to stderr
    assert [r["stage"] for r in report["results"]] == ["stage1", "stage2"]
    for result in report["results"]:
        assert result["samples_per_s"] > 0 and result["tokens_per_s"] > result["samples_per_s"]
        assert result["flops_per_sample"] > 0 and result["mfu"] is None  # no card peak on the CPU


def test_without_a_gpu_the_full_size_run_says_so(capsys):
    import pytest
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the full-size run would start")
    assert run_recipe("bench-full-size", ["--steps", "1"]) == 1
    assert "needs a CUDA GPU" in capsys.readouterr().err
