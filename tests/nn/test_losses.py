"""Eq. 8 pieces checked against direct computations."""

import math

import torch

from pixelagent.nn.losses import LossWeights, bce_loss, dice_loss, mask_losses, phrase_loss, scale_grad


def test_weights_are_the_papers():
    assert LossWeights() == LossWeights(text=1.0, bce=2.0, dice=0.5, llm_mask_grad=1.0, phrase=0.0)


def test_dice_matches_the_formula():
    torch.manual_seed(0)
    logits, targets = torch.randn(3, 8, 9), (torch.rand(3, 8, 9) > 0.5).float()
    p = logits.sigmoid().flatten(1)
    t = targets.flatten(1)
    # with scale s: 1 - (2Σpt/s + eps) / ((Σp + Σt)/s + eps)
    expected = (1 - (2 * (p * t).sum(1) / 1000 + 1e-6) / ((p.sum(1) + t.sum(1)) / 1000 + 1e-6)).sum()
    assert torch.allclose(dice_loss(logits, targets), expected)
    perfect = dice_loss(torch.full((1, 4, 4), 50.0), torch.ones(1, 4, 4))
    assert perfect < 1e-6


def test_bce_is_per_mask_mean_then_sum():
    torch.manual_seed(1)
    logits, targets = torch.randn(2, 5, 5), (torch.rand(2, 5, 5) > 0.5).float()
    per_mask = [torch.nn.functional.binary_cross_entropy_with_logits(logits[i], targets[i]) for i in range(2)]
    assert torch.allclose(bce_loss(logits, targets), sum(per_mask))


def test_mask_losses_average_over_all_masks_of_different_sizes():
    torch.manual_seed(2)
    a, b = torch.randn(1, 4, 4), torch.randn(2, 6, 3)
    ta, tb = (torch.rand(1, 4, 4) > 0.5).float(), (torch.rand(2, 6, 3) > 0.5).float()
    bce, dice = mask_losses([a, b], [ta, tb])
    assert torch.allclose(bce, (bce_loss(a, ta) + bce_loss(b, tb)) / 3)
    assert torch.allclose(dice, (dice_loss(a, ta) + dice_loss(b, tb)) / 3)


def test_no_masks_gives_zero_that_backpropagates():
    logits = torch.randn(0, 4, 4, requires_grad=True)
    bce, dice = mask_losses([logits], [torch.zeros(0, 4, 4)])
    assert bce.item() == 0 and dice.item() == 0
    (bce + dice).backward()


def test_scale_grad_keeps_the_value_and_scales_the_gradient():
    x = torch.randn(3, 4, requires_grad=True)
    y = scale_grad(x, 0.1)
    assert torch.equal(y, x)
    (y * torch.arange(12.0).reshape(3, 4)).sum().backward()
    assert torch.allclose(x.grad, 0.1 * torch.arange(12.0).reshape(3, 4))
    assert scale_grad(x, 1.0) is x


def test_phrase_loss_is_the_mean_word_cross_entropy_per_prompt():
    logits = torch.tensor([[2.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0]])
    words = torch.tensor([[1, 0, 0, 1], [0, 1, 0, 0]])
    log_z = math.log(math.exp(2) + 2 + math.e)
    expected = ((log_z - 2) + (log_z - 1)) / 2 + math.log(4)
    assert math.isclose(phrase_loss(logits, words).item(), expected, rel_tol=1e-6)
    # spreading the probability evenly over exactly its own words gives the minimum, log k
    even = torch.tensor([[30.0, -30.0, -30.0, 30.0]])
    assert math.isclose(phrase_loss(even, words[:1]).item(), math.log(2), rel_tol=1e-4)
