"""The latency benchmarks run through `pixelagent recipe` (tiny sizes, CPU)."""

import json
import os

from pixelagent.recipes import run_recipe


def test_gpu_latency_script_at_tiny_size(capsys):
    assert run_recipe("bench-gpu-latency", ["--tiny", "--turns", "2", "--new-tokens", "6", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert len(report["turns"]) == 2 and report["encode_ms"] > 0 and report["llm_weight_bytes"] > 0
    assert all(t["prefill_ms"] > 0 for t in report["turns"])


def test_concurrent_sessions_answer_as_alone(capsys):
    assert run_recipe("bench-concurrent-sessions", ["--sessions", "3", "--rounds", "1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["answers_identical"] is True and report["concurrent_turns_per_s"] > 0
    # process CPU per turn and per wall second: a turn takes some CPU, and no more cores are
    # busy than the machine has (a timer not reset between phases would break both)
    cores = os.cpu_count() or 1
    assert 0.5 < report["cpu_ms_per_turn_sequential"] < 60_000 and 0.5 < report["cpu_ms_per_turn_concurrent"] < 60_000
    assert 0.1 < report["cores_busy_sequential"] <= cores + 0.25 and 0.1 < report["cores_busy"] <= cores + 0.25


def test_decode_step_benchmark_checks_identical_states_and_answers(capsys):
    assert run_recipe("bench-decode-step", ["--rows", "1", "3", "--past", "20", "--steps", "3", "--scenes", "2",
                                            "--rounds", "1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [s["rows"] for s in report["steps"]] == [1, 3]
    assert report["states_identical"] is True and report["answers_identical"] is True
    assert all(s["lean_ms"] > 0 and s["transformers_ms"] > 0 for s in report["steps"])


def test_decode_step_benchmark_refuses_a_past_beyond_the_window_and_huge_batches(capsys):
    from pixelagent.cli import main

    assert main(["recipe", "bench-decode-step", "--past", "448"]) == 1
    assert "use at most 447" in capsys.readouterr().err
    assert main(["recipe", "bench-decode-step", "--rows", "1", "65"]) == 1
    err = capsys.readouterr().err
    assert "use at most 64" in err and "Traceback" not in err and err.count("\n") == 1
