"""Every recipe answers `pixelagent recipe NAME --help` with its own options, and runs through the CLI."""

import json

import pytest

from pixelagent.cli import main
from pixelagent.recipes import list_recipes

RECIPES = sorted(list_recipes())


@pytest.mark.parametrize("name", RECIPES)
def test_every_recipe_prints_its_own_help(name, capsys):
    assert main(["recipe", name, "--help"]) == 0
    out = capsys.readouterr().out
    assert f"usage: pixelagent recipe {name}" in out and "--help" in out


def test_bad_recipe_arguments_are_one_line(capsys):
    assert main(["recipe", "plan-memory", "--gpus", "two"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pixelagent recipe plan-memory --help" in err and "Traceback" not in err


@pytest.mark.parametrize("name, args", [
    ("bench-metrics", ["--samples", "6", "--repeats", "1", "--size", "48"]),
    ("bench-session-latency", ["--presets", "miras-tiny", "--turns", "2", "--repeats", "1", "--train-steps", "2",
                               "--new-tokens", "4"]),
    ("bench-training-throughput", ["--images", "4", "--batch", "2", "--steps", "2", "--size", "128"]),
    ("bench-cold-start", ["--runs", "1", "--json"]),
])
def test_benchmarks_run_through_the_cli(name, args, capsys):
    assert main(["recipe", name, *args]) == 0
    out = capsys.readouterr().out
    assert out.strip()
    if "--json" in args:
        report = json.loads(out)
        assert report["agent_s"] > 0 and report["floor_s"] > 0


@pytest.mark.parametrize("name, option", [
    ("eval-prist", "--limit"), ("judge-prist", "--limit"), ("ablate-miras-tiny", "--jobs"),
    ("build-miras-tiny", "--eval-limit"), ("pretrain-sam-tiny", "--steps"), ("bench-concurrent-sessions", "--sessions"),
    ("load-test", "--clients"), ("plan-memory", "--gpus"), ("bench-gpu-latency", "--new-tokens"),
    ("bench-decode-step", "--past"),
])
@pytest.mark.parametrize("value", ["0", "-3"])
def test_counts_below_one_are_refused_while_parsing(name, option, value, capsys):
    # `--limit -3` used to evaluate all but the last three dialogues; `--steps 0` trained nothing
    assert main(["recipe", name, option, value]) == 1
    err = capsys.readouterr().err
    assert f"argument {option}: must be a whole number of at least 1, got {value}" in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_no_recipe_takes_an_unchecked_whole_number():
    from pathlib import Path

    recipes = Path(__file__).resolve().parents[1] / "recipes"
    bare = [p.name for p in recipes.glob("*.py") if "type=int" in p.read_text()]
    assert bare == [], f"use pixelagent.arguments.positive_int / non_negative_int in {bare}"
