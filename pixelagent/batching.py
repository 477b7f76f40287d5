"""Sharing work between the turns of different sessions that run at the same time.

An agent answers many sessions from several threads (an app's request handlers,
``pixelagent serve``'s workers). Parts whose work batches well (the LLM's decode steps, SAM's
mask decoder) submit it to a :class:`Coalescer`: the first submission becomes the leader, waits
a few milliseconds while other turns are still on their way (:class:`InFlight` counts the turns
of the agent under way), and runs everything submitted so far as one batch; the others wait
for their results. A turn alone never waits, so one session is as fast as before.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any


class InFlight:
    """How many turns of one agent are under way (``with in_flight:`` around a turn)."""

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self.count = 0

    def __enter__(self) -> InFlight:
        with self._lock:
            self.count += 1
        return self

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self.count -= 1


def wait_for_others(condition: threading.Condition, pending: list, in_flight: InFlight, most: int,
                    window_s: float) -> None:
    """Called holding ``condition``: wait up to ``window_s`` seconds while fewer items are
    ``pending`` than turns are under way (at most ``most``); submitters notify ``condition``."""
    deadline = time.monotonic() + window_s
    while len(pending) < min(in_flight.count, most):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        condition.wait(left)


class Coalescer:
    """Runs concurrent submissions together: ``run_many(items) -> results`` (same order, same length).

    Args:
        run_many: does the batched work; an exception reaches every submitter of that batch.
        in_flight: the agent's turns under way; the leader waits for more only while more turns
            are under way than items are pending.
        window_s: the longest the leader waits for other turns' items.
        max_batch: the most items one batch takes.
    """

    def __init__(self, run_many: Callable[[list[Any]], Sequence[Any]], in_flight: InFlight | None = None,
                 window_s: float = 0.002, max_batch: int = 16) -> None:
        self.run_many, self.in_flight = run_many, in_flight or InFlight()
        self.window_s, self.max_batch = window_s, max_batch
        self._lock = threading.Condition()
        self._pending: list[_Ticket] = []
        self._leading = False
        # sizes of the latest batches run (for tests and benchmarks; bounded: servers run for weeks)
        self.batches: deque[int] = deque(maxlen=4096)

    def submit(self, item: Any) -> Any:
        """``item``'s result, computed alone or with other threads' items."""
        ticket = _Ticket(item)
        with self._lock:
            self._pending.append(ticket)
            self._lock.notify_all()  # a leader gathering a batch looks again
            while not ticket.done:
                if self._leading:
                    self._lock.wait(0.05)  # woken when a batch ends; the timeout guards a lost wake-up
                    continue
                self._lead()
        if ticket.error is not None:
            raise ticket.error
        return ticket.result

    def _lead(self) -> None:
        """Called holding the lock: gather, release the lock while running, wake the others."""
        self._leading = True
        wait_for_others(self._lock, self._pending, self.in_flight, self.max_batch, self.window_s)
        batch, self._pending = self._pending[:self.max_batch], self._pending[self.max_batch:]
        self._lock.release()
        try:
            self._run(batch)
        finally:
            self._lock.acquire()
            self._leading = False
            self._lock.notify_all()

    def notify(self) -> None:
        """A leader waiting for more items should look again (an item arrived, or a turn ended)."""
        with self._lock:
            self._lock.notify_all()

    def _run(self, batch: list[_Ticket]) -> None:
        self.batches.append(len(batch))
        try:
            results = self.run_many([ticket.item for ticket in batch])
            for ticket, result in zip(batch, results):
                ticket.result = result
        except BaseException as exc:  # every waiting turn must hear of it
            for ticket in batch:
                ticket.error = exc
        finally:
            for ticket in batch:
                ticket.done = True


class _Ticket:
    __slots__ = ("item", "result", "error", "done")

    def __init__(self, item: Any) -> None:
        self.item, self.result, self.error, self.done = item, None, None, False
