"""Seeded RNG blocks: reproducible inside, the caller's generator untouched outside."""

import torch

from pixelagent.nn.device import seeded_rng


def test_seeded_blocks_repeat_and_leave_the_callers_rng_where_it_was():
    torch.manual_seed(123)
    expected_outside = torch.rand(3)
    torch.manual_seed(123)
    with seeded_rng(7):
        first = torch.rand(3)
    with seeded_rng(7):
        second = torch.rand(3)
    with seeded_rng(8):
        other = torch.rand(3)
    assert torch.equal(first, second) and not torch.equal(first, other)
    assert torch.equal(torch.rand(3), expected_outside)  # three blocks later, the same next draw
