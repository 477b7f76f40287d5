"""Visual-token insertion and [SEG] gathering at the real positions (never a fixed offset)."""

import pytest
import torch

from pixelagent.nn.tokens import VISUAL_POSITION_ID, align_to_tokens, expand_visual, focus_spans

IMG, SEG, OBJ = 99, 50, 51


@pytest.mark.parametrize("n_visual", [1, 4, 576])
def test_seg_lands_where_the_token_really_is(n_visual):
    # text: [bos, 7, IMG, 8, OBJ, 9, SEG, 10]; after expansion [SEG] moves by n_visual - 1
    ids = torch.tensor([1, 7, IMG, 8, OBJ, 9, SEG, 10])
    labels = ids.clone()
    text_embeds = torch.arange(len(ids), dtype=torch.float32)[:, None].repeat(1, 3)
    visual = torch.full((n_visual, 3), -5.0)
    out = expand_visual(ids, labels, text_embeds, visual, IMG)
    assert len(out.ids) == len(ids) + n_visual - 1
    seg_at = int((out.ids == SEG).nonzero())
    assert seg_at == 6 + n_visual - 1
    assert torch.equal(out.embeds[seg_at], text_embeds[6])  # the [SEG] embedding moved with it
    assert (out.ids[2:2 + n_visual] == VISUAL_POSITION_ID).all()
    assert (out.labels[2:2 + n_visual] == -100).all() and out.labels[seg_at] == SEG
    assert focus_spans(out.ids, SEG, OBJ) == [(seg_at - 2, seg_at)]


def test_text_only_and_double_placeholder():
    ids = torch.tensor([1, 2, 3])
    same = expand_visual(ids, ids, torch.zeros(3, 2), torch.zeros(4, 2), IMG)
    assert torch.equal(same.ids, ids)
    with pytest.raises(ValueError, match="one image placeholder"):
        expand_visual(torch.tensor([IMG, IMG]), torch.tensor([0, 0]), torch.zeros(2, 2), torch.zeros(1, 2), IMG)


def test_aligned_states_are_the_ones_that_predict_each_token():
    hidden = torch.arange(12, dtype=torch.float32).reshape(1, 4, 3)
    aligned = align_to_tokens(hidden)
    assert torch.equal(aligned[0, 1:], hidden[0, :-1]) and (aligned[0, 0] == 0).all()


def test_spans_bare_seg_and_several():
    ids = torch.tensor([5, SEG, OBJ, 6, 7, SEG, OBJ, OBJ, 8, SEG])
    assert focus_spans(ids, SEG, OBJ) == [(1, 1), (2, 5), (7, 9)]
    assert focus_spans(ids, SEG, None) == [(1, 1), (5, 5), (9, 9)]
