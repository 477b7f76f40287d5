"""``ablate-miras-tiny``: seeds per variant, the aggregated table, and resuming stopped runs."""

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest

RECIPES = Path(__file__).resolve().parents[2] / "recipes"


def load_ablation():
    sys.path.insert(0, str(RECIPES))
    try:
        spec = importlib.util.spec_from_file_location("recipe_ablate_under_test", RECIPES / "ablate_miras_tiny.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(RECIPES))


ablate = load_ablation()


def metrics(ciou, no_seg=0.0, bleu=10.0):
    return {"segmentation": {"overall": {"ciou": ciou, "giou": ciou / 2, "f1": 2 * ciou},
                             "by_granularity": {"coarse": {"ciou": ciou}, "fine": {"ciou": ciou / 4}}},
            "no_seg_rate": no_seg, "fine_vs_parent": {"target_iou": 0.1, "parent_iou": 0.2},
            "response": {"bleu4": bleu}}


def test_the_default_budget_is_the_shipped_models_and_the_shipped_variant_gets_two_seeds():
    args = ablate.parse_args([])
    assert (args.steps1, args.steps2, args.eval_limit) == (1500, 2000, 200)
    assert ablate.seeds_of("miras-tiny", args) == [0, 1] and ablate.seeds_of("no-sra", args) == [0]
    args = ablate.parse_args(["--seeds", "3,4", "--shipped-seeds", "4,5"])
    assert ablate.seeds_of("miras-tiny", args) == [3, 4, 5] and ablate.seeds_of("lisa-tiny", args) == [3, 4]
    with pytest.raises(SystemExit, match="comma-separated integers"):
        ablate.seeds_of("no-dual", ablate.parse_args(["--seeds", "a"]))


def test_every_variant_runs_its_first_seed_before_any_variant_runs_a_second():
    # an ablation stopped part-way (a session ending, a preempted job) has a row for each variant
    args = ablate.parse_args(["--seeds", "0", "--shipped-seeds", "0,1,2"])
    names = ["miras-tiny", "no-sra", "lisa-tiny"]
    assert ablate.run_order(names, args) == [("miras-tiny", 0), ("no-sra", 0), ("lisa-tiny", 0),
                                             ("miras-tiny", 1), ("miras-tiny", 2)]


def test_the_table_shows_mean_and_spread_over_seeds_and_reads_the_order_honestly():
    args = ablate.parse_args(["--steps1", "5", "--steps2", "6", "--eval-limit", "7"])
    rows = {"miras-tiny": {"seeds": {0: {"metrics": metrics(0.5, 0.1), "seconds": 60},
                                     1: {"metrics": metrics(0.7, 0.3), "seconds": 120}}},
            "no-sra": {"seeds": {0: {"metrics": metrics(0.55), "seconds": 60}}},
            "no-dual": {"seeds": {0: {"metrics": metrics(0.2), "seconds": 60}}}}
    table = ablate.ablation_markdown(rows, args)
    lines = table.splitlines()
    assert lines[2].startswith("| miras-tiny | 0.600 ± 0.141 | 0.300 ± 0.071 | 0.600 ± 0.141 | n/a | 0.150 ± 0.035 | "
                               "1.200 ± 0.283 | 0.200 ± 0.141 |")
    assert lines[2].endswith("| 1.5 min | 0, 1 |") and lines[3].startswith("| no-sra | 0.550 | ")
    assert "mean ± the sample standard deviation" in table
    assert "Order by mean cIoU: miras-tiny (0.600) > no-sra (0.550) > no-dual (0.200)" in table
    assert "the paper's order (miras-tiny > no-sra > no-dual) holds" in table
    assert "1 of the 2 gaps between neighbours is within it" in table and "not resolved" in table
    rows["no-dual"]["seeds"][0]["metrics"] = metrics(0.9)
    assert "does not hold" in ablate.ablation_markdown(rows, args)


def tiny_build_data(folder):
    from pixelagent.data.synth import SynthConfig, synthesize

    for seed, name, extra in ((0, "prist-synth", {}), (1, "prist-synth-referring", {"min_turns": 1, "max_turns": 1}),
                              (2, "prist-synth-narrowing", {"style": "narrowing"})):
        synthesize(folder / "data" / name, SynthConfig(n=24, size=128, seed=seed, **extra))
    return folder / "data"


@pytest.mark.slow
def test_each_variant_and_seed_is_a_run_that_resumes_where_it_stopped(tmp_path, capfd):
    """At a tiny budget (2 + 3 steps, 2 test dialogues): 5-8 minutes on 2 shared cores."""
    data = tiny_build_data(tmp_path / "build")
    work = tmp_path / "work"
    argv = ["--work", str(work), "--data", str(data), "--steps1", "2", "--steps2", "3", "--eval-limit", "2",
            "--variants", "miras-tiny", "--seeds", "0", "--shipped-seeds", "0,1", "--sam-steps", "2",
            "--checkpoint-every", "1"]
    assert ablate.main(argv) == 0
    runs = {seed: work / "miras-tiny" / f"seed-{seed}" for seed in (0, 1)}
    for run in runs.values():
        assert (run / "stage2" / "final" / "model.safetensors").is_file() and (run / "eval" / "metrics.json").is_file()
    seeds = [json.loads((run / "stage1" / "config.json").read_text()).get("seed") for run in runs.values()]
    assert seeds == [0, 1]
    # SAM-tiny's frozen image embeddings were computed once per image and reused
    assert list((runs[0] / "feature-cache").rglob("*.safetensors"))
    finished = (runs[0] / "eval" / "metrics.json").stat().st_mtime_ns
    # seed 1 "stopped" during stage 2, after its step-2 checkpoint (the last step writes final/ only)
    assert sorted(p.name for p in (runs[1] / "stage2" / "checkpoints").iterdir())[-1] == "step-00000002"
    shutil.rmtree(runs[1] / "stage2" / "final")
    shutil.rmtree(runs[1] / "eval")
    capfd.readouterr()
    assert ablate.main(argv) == 0
    captured = capfd.readouterr()
    stage2 = [line for line in captured.out.splitlines() if "train_stage2.py" in line]
    assert len(stage2) == 1 and "seed-1" in stage2[0] and stage2[0].endswith("--resume")  # only the stopped one
    text = captured.out + captured.err
    assert "resuming from checkpoint" in text and "step-00000002" in text
    assert (runs[1] / "stage2" / "final" / "model.safetensors").is_file()
    assert (runs[0] / "eval" / "metrics.json").stat().st_mtime_ns == finished  # finished: skipped
    table = (work / "ablation.md").read_text()
    assert "| miras-tiny |" in table and "| 0, 1 |" in table and "±" in table
    rows = json.loads((work / "ablation.json").read_text())
    assert set(rows["miras-tiny"]["seeds"]) == {"0", "1"}


def test_jobs_run_that_many_runs_at_once_and_a_failed_run_stops_only_itself(monkeypatch, tmp_path):
    import threading

    together = threading.Barrier(3, timeout=20)  # passes only if three runs are under way at once
    finished = []

    def fake_run(name, seed, data, args):
        together.wait()
        if (name, seed) == ("no-dual", 0):
            raise SystemExit("step failed (1): train_stage2.py")
        finished.append((name, seed))
        return {"metrics": metrics(0.5), "seconds": 1}

    monkeypatch.setattr(ablate, "run_variant", fake_run)
    args = ablate.parse_args(["--jobs", "3"])
    with pytest.raises(SystemExit, match=r"1 of 3 runs failed: no-dual seed 0 \(step failed \(1\).*Rerun the same"):
        ablate.run_all([("miras-tiny", 0), ("no-dual", 0), ("no-sra", 0)], tmp_path, args)
    assert sorted(finished) == [("miras-tiny", 0), ("no-sra", 0)]  # the others went on to the end
    together.reset()
    args = ablate.parse_args(["--jobs", "3"])
    rows = ablate.run_all([("miras-tiny", 0), ("miras-tiny", 1), ("no-sra", 0)], tmp_path, args)
    assert list(rows) == ["miras-tiny", "no-sra"] and list(rows["miras-tiny"]["seeds"]) == [0, 1]


@pytest.mark.parametrize("option", ["--jobs", "--procs", "--steps1", "--steps2", "--checkpoint-every", "--eval-limit"])
def test_counts_must_be_positive(option, capsys):
    with pytest.raises(SystemExit):
        ablate.main([option, "0"])
    assert f"argument {option}: must be a whole number of at least 1, got 0" in capsys.readouterr().err
