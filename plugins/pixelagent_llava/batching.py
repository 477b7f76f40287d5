"""Greedy decoding that shares forward passes between the sessions answering at the same time.

Sessions of one agent asked from several threads (an app, ``pixelagent serve``) would each run
their own prefill and per-token loop, and on a small model every step costs mostly overhead:
eight threads each running the model's own thread pool were *slower* together than one session
after another. Here every turn hands its prefill and its decoding to a :class:`DecodeBatcher`,
which batches at the level of single steps (continuous batching, as LLM servers do):

- the turns that arrive together are **prefilled in one forward pass**: each row's past (its
  dialogue's cache) left-padded to the longest past, its new tokens right-padded to the longest
  new part, an attention mask over every pad and each row's own positions;
- then one **batched decode step** at a time for every row; a turn that arrives meanwhile is
  prefilled and joins at the next step, a row that emits ``</s>`` (or reaches its budget)
  leaves at once with its own cache, cut back to its real positions, and its thread goes on.

Whichever waiting thread finds no one stepping drives the loop, so no turn waits for another
turn's answer to end. Every row computes what it would alone (pads are masked, positions are the
row's own); the tests check the answers are token-identical. A turn alone, with no other turn of
the agent under way, takes the plain loop, so a single session pays nothing for this.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from pixelagent.batching import InFlight, wait_for_others

_STATS = 4096  # the batch statistics kept (a long-running server must not grow them forever)


@dataclass(eq=False)  # jobs are compared by identity (they hold tensors)
class DecodeJob:
    """One turn's generation: the prefill of ``embeds`` after ``cache``, then greedy decoding.

    Attributes:
        cache: its dialogue's cache (``length`` positions), extended in place or replaced.
        length: positions in ``cache`` before this turn.
        embeds: the turn's new input embeddings (T, d), T ≥ 1.
        budget: how many tokens this turn may emit in all.
        generated, hiddens: the emitted ids and, for each, the last-layer state (d,) that
            predicted it; filled in by the batcher.
    """

    cache: Any
    length: int
    embeds: torch.Tensor
    budget: int
    generated: list[int] = field(default_factory=list)
    hiddens: list[torch.Tensor] = field(default_factory=list)
    position: int = 0  # the next position to feed (after the prefill: length + T)
    done: bool = False
    error: BaseException | None = None
    abandoned: bool = False  # its thread stopped waiting (interrupted): drop it at the next step


@dataclass
class _Rows:
    """The turns decoding together: one joined cache, row r's real positions where attention[r] is 1."""

    jobs: list[DecodeJob]
    cache: Any
    attention: torch.Tensor  # (B, L) long


class DecodeBatcher:
    """Runs the prefills and decode loops of concurrent turns as batched steps (module docstring).

    ``step(embeds (B, T, d), attention (B, L) or None, positions (B, T) or None, cache, last)``
    returns the last-layer states (B, d) at the positions ``last`` (B,) (None: the last one);
    ``embed(tokens (B,))`` the input embeddings (B, 1, d); ``logits(states)`` (B, V); ``eos``
    ends a row; ``new_cache()`` an empty cache. ``in_flight`` counts the agent's turns under way
    (:class:`pixelagent.batching.InFlight`): a turn alone takes the plain loop only when no other
    is under way; when the batch is empty the first turn waits up to ``window_s`` for the turns
    other threads are preparing. ``max_batch`` rows decode at once (1: every turn alone); one
    batched prefill computes at most ``max_prefill_tokens`` positions (rows × the longest new
    part; a turn alone always goes in).
    """

    def __init__(self, step: Callable, embed: Callable, logits: Callable, eos: int, new_cache: Callable,
                 in_flight: InFlight | None = None, window_s: float = 0.004, max_batch: int = 16,
                 sync_every: int = 1, max_prefill_tokens: int = 8192) -> None:
        self._step, self._embed, self._logits, self.eos = step, embed, logits, eos
        self._new_cache = new_cache
        self.in_flight = in_flight or InFlight()
        self.window_s, self.max_batch, self.sync_every = window_s, max(1, max_batch), sync_every
        self.max_prefill_tokens = max_prefill_tokens
        self._lock = threading.Condition()
        self._pending: list[DecodeJob] = []
        self._rows: _Rows | None = None
        self._stepping = False
        #: rows in each batched forward pass (prefills and decode steps), and the turns prefilled
        #: together each time (for tests and benchmarks; the latest few thousand)
        self.step_rows: deque[int] = deque(maxlen=_STATS)
        self.prefill_rows: deque[int] = deque(maxlen=_STATS)

    @property
    def batches(self) -> deque[int]:
        """How many turns were prefilled together, each time (1 for a turn alone)."""
        return self.prefill_rows

    def decode(self, job: DecodeJob) -> DecodeJob:
        """Prefill and decode ``job`` (alone or with other threads' turns); returns it filled in."""
        with self._lock:
            self._pending.append(job)
            self._lock.notify_all()
            try:
                while not job.done:
                    if self._stepping:
                        self._lock.wait(0.05)  # woken when a row leaves; the timeout guards a lost wake-up
                        continue
                    self._stepping = True
                    try:
                        self._drive(job)
                    finally:
                        self._stepping = False
                        self._lock.notify_all()
            except BaseException:  # interrupted while waiting (Ctrl-C): nobody decodes for it any more
                if not job.done:
                    if job in self._pending:
                        self._pending.remove(job)
                    job.abandoned = True
                raise
        if job.error is not None:
            raise job.error
        return job

    # -- scheduling (called holding the lock; compute runs with it released) ---------------------
    def _drive(self, own: DecodeJob) -> None:
        """Run steps until ``own`` is done; another waiting thread then takes over the rest."""
        while not own.done:
            if self._rows is None and self._alone_is_best():
                job = self._pending.pop(0)
                self._compute(lambda: self._alone(job), [job], own)
                continue
            if self._rows is None:
                self._gather()
            admitted = self._admissible()
            self._pending = self._pending[len(admitted):]
            if admitted:
                self._compute(lambda: self._admit(admitted), admitted + (self._rows.jobs if self._rows else []), own)
            elif self._rows is not None:
                self._compute(self._step_rows, list(self._rows.jobs), own)

    def _admissible(self) -> list[DecodeJob]:
        """The pending turns to prefill now, oldest first: while the batch has room and the pass
        stays within ``max_prefill_tokens`` (the first always goes in)."""
        room = self.max_batch - (len(self._rows.jobs) if self._rows else 0)
        admitted: list[DecodeJob] = []
        longest = 0
        for job in self._pending[:room]:
            longest = max(longest, job.embeds.shape[0])
            if admitted and (len(admitted) + 1) * longest > self.max_prefill_tokens:
                break
            admitted.append(job)
        return admitted

    def _alone_is_best(self) -> bool:
        if self.max_batch == 1:  # never batched (a static cache, batch_sessions off): one by one
            return bool(self._pending)
        return len(self._pending) == 1 and self.in_flight.count <= 1

    def _gather(self) -> None:
        """The batch is empty: wait up to ``window_s`` for the turns other threads are preparing."""
        wait_for_others(self._lock, self._pending, self.in_flight, self.max_batch, self.window_s)

    def _compute(self, work: Callable[[], list[DecodeJob]], involved: list[DecodeJob], own: DecodeJob) -> None:
        """Run ``work`` without the lock and mark the jobs it finished. When it fails, the jobs a
        :class:`_Failed` names fail (the rows are intact), otherwise every involved job does and
        the rows are gone. An interruption (Ctrl-C) reaches the driving turn as itself and the
        others as a RuntimeError, so worker threads never see a KeyboardInterrupt."""
        self._lock.release()
        finished: list[DecodeJob] = []
        failed: list[DecodeJob] = []
        try:
            finished, error = work(), None
        except _Failed as partial:
            failed, error = partial.jobs, partial.error
        except BaseException as exc:  # the rows' state is lost: every turn in them must hear of it
            failed, error = involved, exc
            self._rows = None  # only the driver touches the rows
        finally:
            self._lock.acquire()
        for job in finished:
            job.done = True
        for job in failed:
            job.error = error if job is own or isinstance(error, Exception) else RuntimeError(
                f"the batched decoding this turn shared was interrupted ({type(error).__name__}); ask again")
            job.done = True
        if finished or failed:  # only then can a waiting thread's state have changed
            self._lock.notify_all()

    # -- the work -----------------------------------------------------------------------------
    def _admit(self, admitted: list[DecodeJob]) -> list[DecodeJob]:
        """Prefill ``admitted`` and join them to the rows; returns the jobs that finished. If the
        prefill fails, only ``admitted`` fail: the rows were not touched yet."""
        try:
            self._join(self._prefill(admitted))  # _join replaces the rows in its last statement
        except BaseException as exc:
            raise _Failed(admitted, exc) from None
        return self._retire_finished()

    def _step_rows(self) -> list[DecodeJob]:
        """One decode step for every row; returns the jobs that finished."""
        self._decode_step(self._rows)
        return self._retire_finished()

    def _alone(self, job: DecodeJob) -> list[DecodeJob]:
        """The plain greedy loop: prefill, then feed each token back until ``eos`` or the budget.

        With ``sync_every`` k > 1 the chosen tokens stay on the device and are read back k at a
        time (one device-to-host copy per k tokens instead of one per token, which stalls a GPU
        each step); tokens chosen after an ``eos`` are dropped and the cache cut back to what the
        one-at-a-time loop would hold, so the answer and the next turn are the same.
        """
        self.prefill_rows.append(1)
        state = self._step(job.embeds.unsqueeze(0), None, None, job.cache, None)
        job.generated, job.hiddens = [int(self._logits(state).argmax(-1)[0])], [state[0]]
        if job.generated[-1] == self.eos or job.budget <= 1:
            return [job]
        if self.sync_every <= 1:
            while job.generated[-1] != self.eos and len(job.generated) < job.budget:
                if self._arrived():
                    return self._continue_batched(job)
                token = torch.tensor([job.generated[-1]], device=state.device)
                state = self._step(self._embed(token), None, None, job.cache, None)
                job.generated.append(int(self._logits(state).argmax(-1)[0]))
                job.hiddens.append(state[0])
            return [job]
        start = job.cache.get_seq_length()
        last = torch.tensor(job.generated, device=state.device)
        while len(job.generated) < job.budget:
            chosen, states = [], []
            for _ in range(min(self.sync_every, job.budget - len(job.generated))):
                state = self._step(self._embed(last), None, None, job.cache, None)
                last = self._logits(state).argmax(-1)
                chosen.append(last)
                states.append(state[0])
            values = torch.cat(chosen).tolist()  # the one sync of this chunk
            for value, state in zip(values, states):
                job.generated.append(int(value))
                job.hiddens.append(state)
                if value == self.eos:
                    break
            if job.generated[-1] == self.eos:
                break
            if len(job.generated) < job.budget and self._arrived():
                return self._continue_batched(job)  # a whole chunk went in: nothing to cut back
        fed = len(job.generated) - 1  # every emitted token but the last went in
        excess = job.cache.get_seq_length() - (start + fed)
        if excess > 0:
            job.cache.crop(-excess)  # transformers 5: a negative count of tokens to remove
        return [job]

    def _arrived(self) -> bool:
        """Whether another turn is waiting (read without the lock: a hint, checked each step)."""
        return self.max_batch > 1 and bool(self._pending)

    def _continue_batched(self, job: DecodeJob) -> list[DecodeJob]:
        """Another turn arrived during a turn alone: it becomes the batch's first row (its cache
        holds every emitted token but the last), and the driver admits the newcomer next."""
        length = job.cache.get_seq_length()
        job.position = length
        self._rows = _Rows([job], job.cache, torch.ones(1, length, dtype=torch.long, device=job.embeds.device))
        return []

    def _prefill(self, jobs: list[DecodeJob]) -> _Rows:
        """One forward pass over the new tokens of ``jobs``: pasts left-padded to the longest,
        new tokens right-padded to the longest (so no query is ever without a real key), every
        pad masked. Each job gets its first token and the state that chose it."""
        self.prefill_rows.append(len(jobs))
        self.step_rows.append(len(jobs))
        device = jobs[0].embeds.device
        past, new = max(j.length for j in jobs), max(j.embeds.shape[0] for j in jobs)
        if len(jobs) == 1:  # nothing to pad: the plain call, as alone
            job = jobs[0]
            states = self._step(job.embeds.unsqueeze(0), None, None, job.cache, None)
            attention = torch.ones(1, job.length + new, dtype=torch.long, device=device)
            self._first_tokens(jobs, states)
            return _Rows(jobs, job.cache, attention)
        cache = self._joined_past(jobs, past)
        embeds = torch.stack([_right_padded(j.embeds, new) for j in jobs])
        attention = torch.zeros(len(jobs), past + new, dtype=torch.long, device=device)
        for row, job in enumerate(jobs):
            attention[row, past - job.length:past] = 1
            attention[row, past:past + job.embeds.shape[0]] = 1
        positions = torch.stack([torch.arange(new, device=device) + j.length for j in jobs])
        last = torch.tensor([j.embeds.shape[0] - 1 for j in jobs], device=device)
        states = self._step(embeds, attention, positions, cache, last)
        self._first_tokens(jobs, states)
        return _Rows(jobs, cache, attention)

    def _first_tokens(self, jobs: list[DecodeJob], states: torch.Tensor) -> None:
        chosen = self._logits(states).argmax(-1).tolist()
        for row, job in enumerate(jobs):
            job.generated, job.hiddens = [int(chosen[row])], [states[row]]
            job.position = job.length + job.embeds.shape[0]

    def _decode_step(self, rows: _Rows) -> None:
        """Feed every row its last token; append what each chose."""
        jobs = rows.jobs
        self.step_rows.append(len(jobs))
        device = rows.attention.device
        rows.attention = torch.cat([rows.attention, rows.attention.new_ones(len(jobs), 1)], dim=1)
        tokens = torch.tensor([j.generated[-1] for j in jobs], device=device)
        if len(jobs) == 1 and bool(rows.attention.all()):  # one row, no pads: the plain call
            states = self._step(self._embed(tokens), None, None, rows.cache, None)
        else:
            positions = torch.tensor([[j.position] for j in jobs], device=device)
            states = self._step(self._embed(tokens), rows.attention, positions, rows.cache, None)
        chosen = self._logits(states).argmax(-1).tolist()  # one sync per step for the whole batch
        for row, job in enumerate(jobs):
            job.generated.append(int(chosen[row]))
            job.hiddens.append(states[row])
            job.position += 1

    def _finished(self, job: DecodeJob) -> bool:
        return job.abandoned or job.generated[-1] == self.eos or len(job.generated) >= job.budget

    def _join(self, block: _Rows) -> None:
        """Add freshly prefilled rows to the running ones (both left-padded to the longer)."""
        if self._rows is None:
            self._rows = block
            return
        rows = self._rows
        longest = max(rows.attention.shape[1], block.attention.shape[1])
        joined = self._stacked([rows.cache, block.cache], longest)
        attention = torch.cat([_left_padded(a, longest) for a in (rows.attention, block.attention)])
        self._rows = _Rows(rows.jobs + block.jobs, joined, attention)

    def _retire_finished(self) -> list[DecodeJob]:
        """Give each finished row its own cache back (its real positions only) and drop it."""
        rows = self._rows
        if rows is None:
            return []
        done = [r for r, job in enumerate(rows.jobs) if self._finished(job)]
        if not done:
            return []
        for r in done:
            real = rows.attention[r].nonzero().squeeze(1)
            own = self._new_cache()
            for index, layer in enumerate(rows.cache.layers):
                own.update(layer.keys[r:r + 1, :, real].clone(), layer.values[r:r + 1, :, real].clone(), index)
            rows.jobs[r].cache = own
        finished = [rows.jobs[r] for r in done]
        keep = [r for r in range(len(rows.jobs)) if r not in set(done)]
        if not keep:
            self._rows = None
            return finished
        index = torch.tensor(keep, device=rows.attention.device)
        attention = rows.attention[index]
        first = int(attention.any(0).nonzero()[0])  # columns that are padding for every row left
        cache = self._new_cache()
        for layer_index, layer in enumerate(rows.cache.layers):
            cache.update(layer.keys[index, :, first:], layer.values[index, :, first:], layer_index)
        self._rows = _Rows([rows.jobs[r] for r in keep], cache, attention[:, first:])
        return finished

    def _joined_past(self, jobs: list[DecodeJob], past: int) -> Any:
        """One cache of the jobs' pasts, each left-padded to ``past`` positions (empty: none)."""
        return self._new_cache() if past == 0 else self._stacked([j.cache for j in jobs], past)

    def _stacked(self, caches: list[Any], length: int) -> Any:
        """One cache whose rows are those of ``caches`` in order, each left-padded to ``length``
        positions (an empty cache gives rows of padding only)."""
        model = next(c for c in caches if c.get_seq_length() > 0)  # the shape of a layer's keys
        stacked = self._new_cache()
        for layer in range(len(model.layers)):
            like = model.layers[layer].keys
            keys = [_left_padded(_layer(c, layer, "keys", like), length) for c in caches]
            values = [_left_padded(_layer(c, layer, "values", like), length) for c in caches]
            stacked.update(torch.cat(keys), torch.cat(values), layer)
        return stacked


class _Failed(Exception):
    """Only ``jobs`` failed (with ``error``); the rows decoding beside them are intact."""

    def __init__(self, jobs: list[DecodeJob], error: BaseException) -> None:
        super().__init__(str(error))
        self.jobs, self.error = jobs, error


def _layer(cache: Any, layer: int, name: str, like: torch.Tensor) -> torch.Tensor:
    """A cache layer's keys or values (B, H, L, D); an empty cache's are (1, H, 0, D)."""
    if len(cache.layers) > layer and cache.layers[layer].is_initialized and cache.get_seq_length() > 0:
        return getattr(cache.layers[layer], name)
    return like.new_zeros(1, like.shape[1], 0, like.shape[3])


def _left_padded(tensor: torch.Tensor, length: int) -> torch.Tensor:
    """(B, ..., L) along dim 2 for caches (B, H, L, D) or dim 1 for masks (B, L): zeros in front."""
    dim = 2 if tensor.dim() == 4 else 1
    pad = length - tensor.shape[dim]
    if pad == 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = pad
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)


def _right_padded(embeds: torch.Tensor, length: int) -> torch.Tensor:
    """(T, d) → (length, d) with zeros after."""
    pad = length - embeds.shape[0]
    return embeds if pad == 0 else torch.cat([embeds, embeds.new_zeros(pad, embeds.shape[1])])
