"""Running ``pixelagent ARGS`` in the test's own process (the real entry point, captured)."""

from __future__ import annotations

from pixelagent.cli import main


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of ``pixelagent ARGS``; a traceback on stderr fails the test."""
    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err
