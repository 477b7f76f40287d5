"""Greedy decoding that shares forward passes between the sessions answering at the same time.

Sessions of one agent asked from several threads (an app, ``pixelagent serve``) would each run
their own per-token loop, and on a small model every step costs mostly overhead: eight threads
each running the model's own thread pool were *slower* together than one session after another.
Here each turn still prefills its own new tokens (prompt lengths and caches differ), then hands
its decoding to a :class:`DecodeBatcher`: the first turn to arrive leads, waits a few
milliseconds for the turns other threads are preparing, and runs one batched decode step for
all of them at a time. Each session's key/value cache is left-padded to the longest, with an
attention mask over the padding and each row's own positions, so every row computes what it
would alone; when the batch ends, each session gets back its own cache, cut to its own tokens.

A turn alone takes the plain loop, so a single session is unaffected.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch


@dataclass
class DecodeJob:
    """One session's decoding after its prefill.

    Attributes:
        cache: its DynamicCache (the prompt fed), extended in place or replaced by the batcher.
        length: positions in ``cache``.
        token, hidden: the first token (from the prefill) and the state that predicted it (d,).
        budget: how many tokens this turn may emit in all (the first included).
    """

    cache: Any
    length: int
    token: int
    hidden: torch.Tensor
    budget: int
    generated: list[int] = field(default_factory=list)
    hiddens: list[torch.Tensor] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None


class DecodeBatcher:
    """Runs the decode loops of concurrent turns as batched steps (see the module docstring).

    ``step(embeds (B, 1, d), attention (B, L) or None, positions (B, 1) or None, cache)`` returns
    the last-layer states (B, d); ``embed(tokens (B,))`` the input embeddings (B, 1, d);
    ``logits(states)`` (B, V); ``eos`` ends a row.
    """

    def __init__(self, step: Callable, embed: Callable, logits: Callable, eos: int, new_cache: Callable,
                 window_s: float = 0.004, max_batch: int = 16) -> None:
        self._step, self._embed, self._logits, self.eos = step, embed, logits, eos
        self._new_cache = new_cache
        self.window_s, self.max_batch = window_s, max_batch
        self._lock = threading.Condition()
        self._pending: list[DecodeJob] = []
        self._leading = False
        self.active = 0  # turns inside respond() right now (preparing or waiting here)
        self.batches: list[int] = []  # sizes of the batches run (for tests and benchmarks)

    # -- turns enter and leave --------------------------------------------------------------------
    def enter(self) -> None:
        with self._lock:
            self.active += 1

    def leave(self) -> None:
        with self._lock:
            self.active -= 1
            self._lock.notify_all()  # a leader waiting for this turn's job must not wait longer

    # -- decoding ---------------------------------------------------------------------------------
    def decode(self, job: DecodeJob) -> DecodeJob:
        """Decode ``job`` (alone or with the jobs of other threads); returns it filled in."""
        with self._lock:
            self._pending.append(job)
            while not job.done.is_set():
                if self._leading:
                    self._lock.wait()
                    continue
                self._leading = True
                deadline = time.monotonic() + self.window_s
                # others are preparing a turn: give them the window to join this batch
                while (len(self._pending) < min(self.active, self.max_batch)
                       and (left := deadline - time.monotonic()) > 0):
                    self._lock.wait(left)
                batch, self._pending = self._pending[:self.max_batch], self._pending[self.max_batch:]
                self._lock.release()
                try:
                    self._run(batch)
                finally:
                    self._lock.acquire()
                    self._leading = False
                    self._lock.notify_all()
        if job.error is not None:
            raise job.error
        return job

    def _run(self, batch: list[DecodeJob]) -> None:
        try:
            self.batches.append(len(batch))
            if len(batch) == 1:
                self._alone(batch[0])
            else:
                self._together(batch)
        except BaseException as exc:  # every waiting turn must hear of it
            for job in batch:
                job.error = exc
        finally:
            for job in batch:
                job.done.set()

    def _alone(self, job: DecodeJob) -> None:
        """The plain greedy loop: feed each token back until ``eos`` or the budget."""
        job.generated, job.hiddens = [job.token], [job.hidden]
        while job.generated[-1] != self.eos and len(job.generated) < job.budget:
            state = self._step(self._embed(torch.tensor([job.generated[-1]])), None, None, job.cache)
            job.generated.append(int(self._logits(state).argmax(-1)[0]))
            job.hiddens.append(state[0])

    def _together(self, batch: list[DecodeJob]) -> None:
        longest = max(job.length for job in batch)
        cache, pads = self._joined(batch, longest)
        device = batch[0].hidden.device
        attention = torch.zeros(len(batch), longest, dtype=torch.long, device=device)
        for row, pad in enumerate(pads):
            attention[row, pad:] = 1
        positions = torch.tensor([[job.length] for job in batch], device=device)
        for job in batch:
            job.generated, job.hiddens = [job.token], [job.hidden]
        live = [job.token != self.eos and job.budget > 1 for job in batch]
        fed = [0] * len(batch)
        while any(live):
            tokens = torch.tensor([job.generated[-1] for job in batch])
            attention = torch.cat([attention, attention.new_ones(len(batch), 1)], dim=1)
            states = self._step(self._embed(tokens), attention, positions, cache)
            chosen = self._logits(states).argmax(-1).tolist()  # one sync per step for the whole batch
            positions = positions + 1
            for row, job in enumerate(batch):
                if not live[row]:
                    continue
                fed[row] += 1
                job.generated.append(int(chosen[row]))
                job.hiddens.append(states[row])
                live[row] = job.generated[-1] != self.eos and len(job.generated) < job.budget
        self._split(batch, cache, pads, longest, fed)

    def _joined(self, batch: list[DecodeJob], longest: int) -> tuple[Any, list[int]]:
        """One cache for the batch: each row's keys and values left-padded to ``longest``."""
        joined = self._new_cache()
        pads = [longest - job.length for job in batch]
        for layer in range(len(batch[0].cache.layers)):
            keys = [_padded(job.cache.layers[layer].keys, pad) for job, pad in zip(batch, pads)]
            values = [_padded(job.cache.layers[layer].values, pad) for job, pad in zip(batch, pads)]
            joined.update(torch.cat(keys), torch.cat(values), layer)
        return joined, pads

    def _split(self, batch: list[DecodeJob], cache: Any, pads: list[int], longest: int, fed: list[int]) -> None:
        """Give each job its own cache back: its prompt and the tokens it fed, no padding."""
        for row, job in enumerate(batch):
            own = self._new_cache()
            stop = longest + fed[row]
            for layer_index, layer in enumerate(cache.layers):
                own.update(layer.keys[row:row + 1, :, pads[row]:stop].clone(),
                           layer.values[row:row + 1, :, pads[row]:stop].clone(), layer_index)
            job.cache = own


def _padded(tensor: torch.Tensor, pad: int) -> torch.Tensor:
    """(1, H, L, D) → (1, H, pad + L, D) with zeros in front."""
    if pad == 0:
        return tensor
    return torch.cat([tensor.new_zeros(*tensor.shape[:2], pad, tensor.shape[-1]), tensor], dim=2)
