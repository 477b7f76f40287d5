"""Training-time noise on the words of ``[OBJ] phrase [SEG]`` spans (not in the paper).

At inference the mask decoder is prompted from the model's *own* phrase, whose words can be
wrong (a small LLM often names the right object at the wrong place). Teacher forcing only ever
shows it the reference phrase, so it learns to trust every word, the least reliable included.
This noise swaps such words, inside spans only, for another word of the same group (``top`` ↔
``bottom``) in the LLM's *input*, keeps the mask target, and drops the swapped tokens from the
text loss (the LLM is never taught the wrong word). The mask path then learns to lean on the
words that stay right. Off unless a training config names groups.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from pixelagent.errors import ConfigError
from pixelagent.nn.tokens import focus_spans

IGNORE = -100  # the label value the text loss skips


class PhraseNoise:
    """Swap grouped words inside focus spans with probability ``p`` each.

    Args:
        groups: interchangeable token ids, e.g. the ids of ``top``, ``bottom``, ``centre``.
        p: the chance that one grouped token of a span is swapped (0..1).
        seg_id, obj_id: the ``[SEG]`` and ``[OBJ]`` ids that delimit spans.
    """

    def __init__(self, groups: Sequence[Sequence[int]], p: float, seg_id: int, obj_id: int | None) -> None:
        if not 0.0 <= p <= 1.0:
            raise ConfigError(f"phrase_noise.p must be in [0, 1], got {p}")
        self.p, self.seg_id, self.obj_id = p, seg_id, obj_id
        self.group_of: dict[int, list[int]] = {}
        for group in groups:
            members = list(dict.fromkeys(group))
            if len(members) < 2:
                raise ConfigError(f"a phrase_noise group needs two different words, got {list(group)}")
            for token in members:
                if token in self.group_of:
                    raise ConfigError("a word is in two phrase_noise groups; give each word one group")
                self.group_of[token] = members

    @classmethod
    def from_words(cls, groups: Sequence[Sequence[str]], p: float, tokenizer, seg_id: int,
                   obj_id: int | None) -> PhraseNoise:
        """Groups of words → token ids; each word must be one token as it appears mid-phrase."""
        ids = []
        for group in groups:
            row = []
            for word in group:
                pieces = tokenizer(" " + word, add_special_tokens=False)["input_ids"]
                if len(pieces) != 1:
                    raise ConfigError(f"phrase_noise word {word!r} is {len(pieces)} tokens for this "
                                      "tokenizer; only single-token words can be swapped")
                row.append(pieces[0])
            ids.append(row)
        return cls(ids, p, seg_id, obj_id)

    def __call__(self, ids: list[int], labels: list[int]) -> tuple[list[int], list[int]]:
        """One dialogue's token ids and labels → noisy copies (the inputs are not modified)."""
        ids, labels = list(ids), list(labels)
        for start, seg in focus_spans(torch.tensor(ids), self.seg_id, self.obj_id):
            for i in range(start + 1, seg):
                group = self.group_of.get(ids[i])
                if group is None or torch.rand(()).item() >= self.p:
                    continue
                others = [t for t in group if t != ids[i]]
                ids[i] = others[int(torch.randint(len(others), ()).item())]
                labels[i] = IGNORE
        return ids, labels
