"""Where model work runs: off the event loop, at most ``workers`` turns at once.

This is the seam for batching across sessions. The app hands a runner one turn at a time
(``await runner.ask(session, question)``), already serialised per session by the session's lock,
so a runner never sees two turns of one session at once. :class:`ThreadRunner` runs each turn
in a worker thread. A batching runner would keep the same two methods: queue the turns that
arrive within a few milliseconds, run them as one forward pass when the backbone can (one
prefill and lock-step decoding over several sessions' KV caches; the inference-speed issue),
and resolve each caller's future with its own :class:`~pixelagent.results.Turn`. Nothing above
the runner (routes, store, JSON) would change.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import anyio
import anyio.to_thread

from pixelagent.intent import Focus
from pixelagent.results import Turn
from pixelagent.schema import focus_of
from pixelagent.session import Session

T = TypeVar("T")


class TurnRunner(Protocol):
    """Runs model work for the app (see the module docstring)."""

    async def ask(self, session: Session, question: str) -> tuple[Turn, Focus | None]:
        """One turn of ``session``: the new turn and the focus it set (None without a target)."""

    async def call(self, function: Callable[..., T], *args: Any) -> T:
        """Other blocking work (decoding an upload, drawing an overlay), off the event loop."""


class ThreadRunner:
    """Each turn on one of ``workers`` dedicated threads; the rest wait their turn (in order).

    Dedicated threads, not a shared pool: each thread that runs torch keeps its own OpenMP team,
    so a pool of many threads taking turns would leave many teams spinning on few cores.
    """

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._model = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="pixelagent-turn")
        self._other = anyio.CapacityLimiter(max(4, workers))  # image work never waits behind turns

    async def ask(self, session: Session, question: str) -> tuple[Turn, Focus | None]:
        return await asyncio.get_running_loop().run_in_executor(self._model, _ask, session, question)

    def close(self) -> None:
        self._model.shutdown(wait=False, cancel_futures=True)

    async def call(self, function: Callable[..., T], *args: Any) -> T:
        return await anyio.to_thread.run_sync(function, *args, limiter=self._other)


def _ask(session: Session, question: str) -> tuple[Turn, Focus | None]:
    session.ask(question)
    turn = session.history[-1]  # ours: the app lets one turn of a session run at a time
    return turn, focus_of(session.intent, turn.index)
