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
