"""``python -m pixelagent`` is the ``pixelagent`` command."""

from pixelagent.cli import run

run()
