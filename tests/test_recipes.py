"""``pixelagent recipe``: listing, running with arbitrary arguments, helpful errors."""

import json

import pytest

from pixelagent.cli import main
from pixelagent.recipes import RECIPES_ENV, list_recipes

RECIPE = '''"""Echo the arguments into a file."""
import json, sys
from pathlib import Path

def main(argv=None):
    Path(argv[0]).write_text(json.dumps(argv[1:]))
    return 3 if "--fail" in argv else 0
'''


@pytest.fixture
def recipes(tmp_path, monkeypatch):
    folder = tmp_path / "recipes"
    folder.mkdir()
    (folder / "echo_args.py").write_text(RECIPE)
    (folder / "no_main.py").write_text('"""Nothing to run."""\n')
    (folder / "_private.py").write_text("")
    monkeypatch.setenv(RECIPES_ENV, str(folder))
    return folder


def test_list_names_and_summaries(recipes, capsys):
    assert list_recipes() == {"echo-args": "Echo the arguments into a file.", "no-main": "Nothing to run."}
    assert main(["recipe", "list"]) == 0
    assert "echo-args" in capsys.readouterr().out


def test_run_passes_every_argument_through(recipes, tmp_path):
    out = tmp_path / "args.json"
    assert main(["recipe", "echo-args", str(out), "--config", "x.yaml", "lr=1e-4", "--resume"]) == 0
    assert json.loads(out.read_text()) == ["--config", "x.yaml", "lr=1e-4", "--resume"]
    assert main(["recipe", "echo-args", str(out), "--fail"]) == 3


def test_errors_are_one_line(recipes, capsys):
    assert main(["recipe", "nope"]) == 1
    assert "unknown recipe 'nope'; available: echo-args, no-main" in capsys.readouterr().err
    assert main(["recipe", "no-main"]) == 1
    assert "defines no main(argv)" in capsys.readouterr().err


def test_the_shipped_recipes_are_listed(monkeypatch):
    monkeypatch.delenv(RECIPES_ENV, raising=False)
    assert "bench-session-latency" in list_recipes()
