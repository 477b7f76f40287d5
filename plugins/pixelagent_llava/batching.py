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

from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from pixelagent.batching import Coalescer, InFlight


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


class DecodeBatcher:
    """Runs the decode loops of concurrent turns as batched steps (see the module docstring).

    ``step(embeds (B, 1, d), attention (B, L) or None, positions (B, 1) or None, cache)`` returns
    the last-layer states (B, d); ``embed(tokens (B,))`` the input embeddings (B, 1, d);
    ``logits(states)`` (B, V); ``eos`` ends a row. ``in_flight`` counts the agent's turns under
    way (:class:`pixelagent.batching.InFlight`): while more are under way than jobs are waiting,
    the first job waits up to ``window_s`` for theirs.
    """

    def __init__(self, step: Callable, embed: Callable, logits: Callable, eos: int, new_cache: Callable,
                 in_flight: InFlight | None = None, window_s: float = 0.004, max_batch: int = 16,
                 sync_every: int = 1) -> None:
        self._step, self._embed, self._logits, self.eos = step, embed, logits, eos
        self._new_cache = new_cache
        self.sync_every = sync_every
        self._coalescer = Coalescer(self._run, in_flight, window_s, max_batch)

    @property
    def batches(self) -> list[int]:
        """Sizes of the batches run so far (for tests and benchmarks)."""
        return self._coalescer.batches

    def decode(self, job: DecodeJob) -> DecodeJob:
        """Decode ``job`` (alone or with the jobs of other threads); returns it filled in."""
        return self._coalescer.submit(job)

    def _run(self, batch: list[DecodeJob]) -> list[DecodeJob]:
        if len(batch) == 1:
            self._alone(batch[0])
        else:
            self._together(batch)
        return batch

    def _alone(self, job: DecodeJob) -> None:
        """The plain greedy loop: feed each token back until ``eos`` or the budget.

        With ``sync_every`` k > 1 the chosen tokens stay on the device and are read back k at a
        time (one device-to-host copy per k tokens instead of one per token, which stalls a GPU
        each step); tokens chosen after an ``eos`` are dropped and the cache cut back to what the
        one-at-a-time loop would hold, so the answer and the next turn are the same.
        """
        job.generated, job.hiddens = [job.token], [job.hidden]
        if job.generated[-1] == self.eos or job.budget <= 1:
            return
        if self.sync_every <= 1:
            while job.generated[-1] != self.eos and len(job.generated) < job.budget:
                state = self._step(self._embed(torch.tensor([job.generated[-1]])), None, None, job.cache)
                job.generated.append(int(self._logits(state).argmax(-1)[0]))
                job.hiddens.append(state[0])
            return
        start = job.cache.get_seq_length()
        last = torch.tensor([job.token], device=job.hidden.device)
        while len(job.generated) < job.budget:
            chosen, states = [], []
            for _ in range(min(self.sync_every, job.budget - len(job.generated))):
                state = self._step(self._embed(last), None, None, job.cache)
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
        fed = len(job.generated) - 1  # every emitted token but the last went in
        excess = job.cache.get_seq_length() - (start + fed)
        if excess > 0:
            job.cache.crop(-excess)  # transformers 5: a negative count of tokens to remove

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
