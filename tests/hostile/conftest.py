"""The hostile-input suite: oversized, malformed and hostile input through the real entry points.

Every test here is marked ``@pytest.mark.hostile(kind)`` and runs

- under a memory ceiling (``RLIMIT_AS`` = the process's size now + :data:`MEMORY_BUDGET`), so a
  regression that allocates in proportion to hostile input fails with a MemoryError instead of
  getting CI killed by the kernel;
- under a wall-clock limit (``SIGALRM``, :data:`DEFAULT_TIMEOUT_S` or ``timeout=`` on the marker):
  a hang fails as :class:`Hang`.

At the end pytest prints the suite's table: per kind, the cases tried, those that gave a clear
error (or, ``expect="result"``, the right result), and the failures by class — a traceback
(an unexpected exception), a hang, or a silent wrong result (an assertion about what should
have happened did not hold).
"""

from __future__ import annotations

import resource
import signal
from collections import defaultdict

import pytest

from pixelagent.errors import PixelAgentError

MEMORY_BUDGET = 3 << 30  # bytes a hostile case may add to the process's address space
DEFAULT_TIMEOUT_S = 30.0

_OUTCOMES = ("clear", "ok", "traceback", "hang", "wrong")
_tally: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(_OUTCOMES, 0))


class Hang(BaseException):
    """A hostile case ran past its time limit. A BaseException, so that code under test which
    catches ``Exception`` (the CLI does, to print one line) cannot swallow it."""


def _address_space_now() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmSize in /proc/self/status")


@pytest.fixture(autouse=True)
def _hostile_limits(request):
    marker = request.node.get_closest_marker("hostile")
    if marker is None:
        raise pytest.UsageError(f"{request.node.nodeid}: every test in tests/hostile needs @pytest.mark.hostile(kind)")
    timeout = float(marker.kwargs.get("timeout", DEFAULT_TIMEOUT_S))
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    ceiling = _address_space_now() + MEMORY_BUDGET
    if hard != resource.RLIM_INFINITY:
        ceiling = min(ceiling, hard)
    resource.setrlimit(resource.RLIMIT_AS, (ceiling, hard))

    def _alarm(signum, frame):
        raise Hang(f"still running after {timeout:g} s")

    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    marker = item.get_closest_marker("hostile")
    if marker is None or not marker.args or report.when != "call":
        return
    kind = marker.args[0]
    if report.passed:
        _tally[kind]["ok" if marker.kwargs.get("expect") == "result" else "clear"] += 1
    elif report.failed:
        error = call.excinfo.type if call.excinfo is not None else None
        if error is not None and issubclass(error, Hang):
            _tally[kind]["hang"] += 1
        elif error is not None and issubclass(error, AssertionError):
            _tally[kind]["wrong"] += 1
        else:
            _tally[kind]["traceback"] += 1


def pytest_terminal_summary(terminalreporter):
    if not _tally:
        return
    write = terminalreporter.write_line
    terminalreporter.section("hostile input")
    header = f"{'class':<22}{'cases':>6}{'clear errors':>14}{'right results':>15}{'tracebacks':>12}{'hangs':>7}{'silent wrong':>14}"
    write(header)
    totals = dict.fromkeys(_OUTCOMES, 0)
    for kind in sorted(_tally):
        row = _tally[kind]
        for key in _OUTCOMES:
            totals[key] += row[key]
        write(_row(kind, row))
    write(_row("all", totals))


def _row(kind: str, row: dict[str, int]) -> str:
    cases = sum(row.values())
    return (f"{kind:<22}{cases:>6}{row['clear']:>14}{row['ok']:>15}{row['traceback']:>12}"
            f"{row['hang']:>7}{row['wrong']:>14}")


# -- helpers for the cases ------------------------------------------------------------------------
def one_line(error: BaseException) -> str:
    """The error's message, checked to be a single non-empty line, as the CLI would print it."""
    text = str(error)
    assert text and "\n" not in text, f"not one line: {text!r}"
    return text


@pytest.fixture
def expect_clear_error():
    """``expect_clear_error(call, *words, kind=PixelAgentError, within_s=None)``: ``call()`` must raise
    ``kind`` with a one-line message containing each of ``words`` (case-insensitive), within
    ``within_s`` seconds when given; returns the exception."""
    import time

    def check(call, *words: str, kind: type[BaseException] = PixelAgentError, within_s: float | None = None):
        started = time.perf_counter()
        with pytest.raises(BaseException) as info:
            call()
        elapsed = time.perf_counter() - started
        if isinstance(info.value, Hang):
            raise info.value
        assert isinstance(info.value, kind), f"expected {kind.__name__}, got {type(info.value).__name__}: {info.value}"
        message = one_line(info.value).lower()
        for word in words:
            assert word.lower() in message, f"{word!r} not in {str(info.value)!r}"
        if within_s is not None:
            assert elapsed <= within_s, f"took {elapsed:.3f} s, more than {within_s} s"
        return info.value

    return check


@pytest.fixture
def cli(capsys):
    """``cli(*args)`` runs ``pixelagent ARGS`` in this process; returns (exit code, stdout, stderr).

    Checks the CLI's promise on failure: one ``error: …`` line on stderr, never a traceback."""
    from pixelagent.cli import main

    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main(list(args))
        out, err = capsys.readouterr()
        assert "Traceback" not in err and "Traceback" not in out, err
        if code:
            lines = [line for line in err.splitlines() if line.startswith("error:")]
            assert len(lines) == 1, f"expected one error line, got {err!r}"
        return code, out, err

    return run


@pytest.fixture(scope="session")
def tiny_agent():
    """The shipped miras-tiny, built once for the suite (its sessions are independent)."""
    from pixelagent import Agent

    return Agent("miras-tiny", device="cpu")


@pytest.fixture
def gray_image():
    import numpy as np

    return np.full((96, 128, 3), 127, dtype=np.uint8)
