"""Visual-token insertion and ``[SEG]`` / ``[OBJ]`` position bookkeeping.

Convention used throughout (LISA's): the hidden state *of* a token is the last-layer state that
*predicts* it, i.e. the state at the position just before the token. During generation that is
the state of the step that emitted the token; in a teacher-forced sequence it is
``hidden[:, pos - 1]``. :func:`align_to_tokens` shifts teacher-forced states into that
convention so one alignment code path serves training and inference.

Positions are always computed on the *expanded* sequence, after the image placeholder has been
replaced by however many visual tokens the encoder produced (never a fixed offset).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

#: Id written into expanded token ids at visual-token positions (never a real token id).
VISUAL_POSITION_ID = -1


@dataclass
class Expanded:
    """One sequence with its image placeholder replaced by visual tokens.

    Attributes:
        embeds: (L, d) input embeddings.
        ids: (L,) token ids, :data:`VISUAL_POSITION_ID` at visual positions.
        labels: (L,) target ids, -100 where nothing is supervised (visual tokens, prompts).
    """

    embeds: torch.Tensor
    ids: torch.Tensor
    labels: torch.Tensor


def expand_visual(ids: torch.Tensor, labels: torch.Tensor, text_embeds: torch.Tensor,
                  visual: torch.Tensor, placeholder_id: int) -> Expanded:
    """Replace the single ``placeholder_id`` in ``ids`` (T,) by the N rows of ``visual`` (N, d).

    ``text_embeds`` (T, d) are the embeddings of ``ids``; the result has length T + N - 1.
    A sequence without a placeholder is returned unchanged (text-only samples). ``ids`` and
    ``labels`` may live on another device than the embeddings (the CPU, as the LLaVA backbone
    keeps them); each keeps its own.
    """
    where = (ids == placeholder_id).nonzero().flatten()
    if len(where) == 0:
        return Expanded(text_embeds, ids, labels)
    if len(where) > 1:
        raise ValueError(f"expected one image placeholder, found {len(where)} at {where.tolist()}")
    p = int(where[0])
    n = visual.shape[0]
    fill_ids = torch.full((n,), VISUAL_POSITION_ID, dtype=ids.dtype, device=ids.device)
    fill_labels = torch.full((n,), -100, dtype=labels.dtype, device=labels.device)
    return Expanded(
        embeds=torch.cat([text_embeds[:p], visual.to(text_embeds.dtype), text_embeds[p + 1:]]),
        ids=torch.cat([ids[:p], fill_ids, ids[p + 1:]]),
        labels=torch.cat([labels[:p], fill_labels, labels[p + 1:]]),
    )


def align_to_tokens(hidden: torch.Tensor) -> torch.Tensor:
    """Teacher-forced states (B, L, d) → states aligned with the tokens they predict (B, L, d).

    ``out[:, i] = hidden[:, i - 1]``; ``out[:, 0]`` (predicted by nothing) is zero.
    """
    return torch.cat([torch.zeros_like(hidden[:, :1]), hidden[:, :-1]], dim=1)


def focus_spans(ids: torch.Tensor, seg_id: int, obj_id: int | None) -> list[tuple[int, int]]:
    """``(start, seg)`` index pairs, one per ``[SEG]`` in ``ids`` (T,), in order.

    ``start`` is the ``[OBJ]`` opening the span (the last one after the previous ``[SEG]``), or
    the ``[SEG]`` itself when there is none (a LISA-style bare ``[SEG]``).
    """
    spans, opened = [], None
    for i, token in enumerate(ids.tolist()):
        if obj_id is not None and token == obj_id:
            opened = i
        elif token == seg_id:
            spans.append((i if opened is None else opened, i))
            opened = None
    return spans
