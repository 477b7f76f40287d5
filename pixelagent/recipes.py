"""Finding and running the recipes under ``recipes/`` (``pixelagent recipe NAME ...``).

Recipes are programs, not library code (torchtune's habit): each ``recipes/<name>.py`` file
defines ``main(argv: list[str] | None = None)`` and runs from a source checkout. The command
name is the file name with dashes (``eval_prist.py`` → ``eval-prist``).
``PIXELAGENT_RECIPES_DIR`` points at another folder of recipes.
"""

from __future__ import annotations

import ast
import contextlib
import importlib.util
import os
import sys
from pathlib import Path

from pixelagent.errors import ConfigError, UnknownNameError

RECIPES_ENV = "PIXELAGENT_RECIPES_DIR"


def recipes_dir() -> Path:
    """``$PIXELAGENT_RECIPES_DIR``, else the ``recipes/`` folder of this source checkout."""
    configured = os.environ.get(RECIPES_ENV)
    folder = Path(configured) if configured else Path(__file__).resolve().parents[1] / "recipes"
    if not folder.is_dir():
        raise ConfigError(f"no recipes folder at {folder}: recipes run from a source checkout "
                          f"(git clone the project) or from a folder named by {RECIPES_ENV}")
    return folder


def list_recipes() -> dict[str, str]:
    """Recipe name → the first line of its docstring."""
    return {path.stem.replace("_", "-"): _summary(path)
            for path in sorted(recipes_dir().glob("*.py")) if not path.name.startswith("_")}


def _summary(path: Path) -> str:
    docstring = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    return docstring.strip().splitlines()[0] if docstring.strip() else ""


def run_recipe(name: str, argv: list[str]) -> int:
    """Load ``recipes/<name>.py`` and call its ``main(argv)``; returns its exit code.

    ``--help`` prints the recipe's own options (exit 0); a bad argument is one
    :class:`~pixelagent.errors.ConfigError` line naming the recipe, not argparse's usage block."""
    path = recipes_dir() / f"{name.replace('-', '_')}.py"
    if not path.is_file():
        available = ", ".join(list_recipes()) or "none"
        raise UnknownNameError(f"unknown recipe {name!r}; available: {available}")
    spec = importlib.util.spec_from_file_location(f"pixelagent_recipe_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # what dataclasses and pickling look a module up by
    spec.loader.exec_module(module)
    if not hasattr(module, "main"):
        raise ConfigError(f"recipe {path} defines no main(argv) function")
    try:
        with _one_line_argument_errors(name):
            result = module.main(argv)
    except SystemExit as exc:  # argparse's --help, or a recipe that exits with a status
        code = exc.code
        if code is None or isinstance(code, int):
            return code or 0
        print(code, file=sys.stderr)  # SystemExit("message"), as scripts do
        return 1
    return result if isinstance(result, int) else 0


@contextlib.contextmanager
def _one_line_argument_errors(name: str):
    """argparse prints a usage block and exits 2 on a bad argument; say it in one line instead."""
    import argparse

    original = argparse.ArgumentParser.error

    def error(parser, message):
        raise ConfigError(f"recipe {name}: {message} (see pixelagent recipe {name} --help)")

    argparse.ArgumentParser.error = error
    try:
        yield
    finally:
        argparse.ArgumentParser.error = original
