"""GRPO-family math against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from eagrl.rl.objectives import (
    ADVANTAGES,
    AGGREGATIONS,
    adaptive_clip_high,
    clipped_surrogate,
    k3_kl,
    policy_loss,
    register,
    token_entropy,
)


def test_group_advantages_and_a_zero_variance_group():
    rewards = torch.tensor([[1.0, 2.0, 3.0], [5.0, 5.0, 5.0]])
    std = math.sqrt(2 / 3)  # population std of 1, 2, 3
    expected = torch.tensor([[-1 / (std + 1e-4), 0.0, 1 / (std + 1e-4)], [0.0, 0.0, 0.0]])
    torch.testing.assert_close(ADVANTAGES["grpo"](rewards), expected)
    torch.testing.assert_close(ADVANTAGES["dr_grpo"](rewards), torch.tensor([[-1.0, 0.0, 1.0], [0.0, 0.0, 0.0]]))


@pytest.mark.parametrize(
    ("entropy", "expected"),
    [
        ([[0.5, 1.0, 1.5]], [[0.2, 0.3, 0.4]]),  # min–max normalised within the group
        ([[1.0, 1.0, 1.0]], [[0.2, 0.2, 0.2]]),  # equal entropies: no evidence, the fixed clip ε_min
        ([[math.nan, 1.0, 2.0]], [[0.2, 0.2, 0.4]]),  # no key tokens: ε_min, and left out of the bounds
        ([[3.0, 1.0], [0.0, 0.0]], [[0.4, 0.2], [0.2, 0.2]]),  # groups are normalised separately
    ],
)
def test_adaptive_clip_mapping(entropy, expected):
    result = adaptive_clip_high(torch.tensor(entropy), eps_min=0.2, eps_max=0.4)
    torch.testing.assert_close(result, torch.tensor(expected))


def test_clipped_surrogate_on_both_sides():
    ratios = torch.tensor([[1.5, 0.5], [1.5, 0.5], [1.5, 1.0]])
    old = torch.zeros(3, 2)
    advantages = torch.tensor([1.0, -1.0, 1.0])
    loss, clipped = clipped_surrogate(
        ratios.log(), old, advantages, eps_low=0.2, eps_high=torch.tensor([0.2, 0.2, 0.4])
    )
    # A > 0: r = 1.5 is clipped to 1.2, r = 0.5 is not (the pessimistic bound keeps 0.5)
    # A < 0: r = 1.5 stays (−1.5 < −1.2), r = 0.5 is clipped to 0.8 (−0.8 < −0.5)
    # a looser ε_high = 0.4 clips 1.5 to 1.4 only
    torch.testing.assert_close(loss, torch.tensor([[-1.2, -0.5], [1.5, 0.8], [-1.4, -1.0]]))
    assert clipped.tolist() == [[True, False], [False, True], [True, False]]
    scalar, _ = clipped_surrogate(ratios.log(), old, advantages, eps_low=0.2, eps_high=0.2)
    torch.testing.assert_close(scalar[:2], loss[:2])


def test_k3_kl():
    logp = torch.tensor([[math.log(0.5), math.log(0.3)]])
    ref = torch.tensor([[math.log(0.25), math.log(0.3)]])
    expected = torch.tensor([[0.5 - math.log(0.5) - 1, 0.0]])  # exp(Δ) − Δ − 1 with Δ = log(0.25/0.5)
    torch.testing.assert_close(k3_kl(logp, ref), expected)
    assert (k3_kl(torch.randn(4, 5), torch.randn(4, 5)) >= 0).all()


def test_aggregation_weights():
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    torch.testing.assert_close(AGGREGATIONS["grpo"](mask), torch.tensor([[0.25, 0.25, 0.0], [0.5, 0.0, 0.0]]))
    torch.testing.assert_close(AGGREGATIONS["dapo"](mask), mask / 3)
    torch.testing.assert_close(AGGREGATIONS["dr_grpo"](mask, max_tokens=4), mask / 8)


def test_token_entropy():
    logits = torch.tensor([[0.0, 0.0, 0.0, 0.0], [100.0, 0.0, 0.0, 0.0]])
    torch.testing.assert_close(token_entropy(logits), torch.tensor([math.log(4), 0.0]), atol=1e-5, rtol=0)


def test_a_ratio_in_the_adaptive_band_keeps_its_gradient_under_eagrl_only():
    """r = 1.3 with A > 0: GRPO's fixed up-clip 1.2 cuts the gradient, EAG-RL's ε_high(τ) = 0.4 keeps it."""
    logp = torch.tensor([[math.log(1.3), math.log(1.1)]], requires_grad=True)
    old, advantages = torch.zeros(1, 2), torch.tensor([1.0])
    gradients = {}
    for name, eps_high in (("grpo", 0.2), ("eagrl", torch.tensor([0.4]))):
        loss, _ = clipped_surrogate(logp, old, advantages, eps_low=0.2, eps_high=eps_high)
        (gradient,) = torch.autograd.grad(loss.sum(), logp)
        gradients[name] = gradient
    assert gradients["grpo"][0, 0] == 0 and gradients["eagrl"][0, 0] == pytest.approx(-1.3)
    assert gradients["grpo"][0, 1] == gradients["eagrl"][0, 1] == pytest.approx(-1.1)  # below 1.2: the same


def test_a_name_registered_twice_is_refused():
    registry = {}
    register(registry, "grpo")(torch.mean)
    with pytest.raises(ValueError, match="registered twice"):
        register(registry, "grpo")(torch.sum)
    assert registry == {"grpo": torch.mean}


def test_policy_loss_counts_the_adaptive_band_and_the_clips():
    # one answer with A > 0 and ratios 1.1, 1.3, 1.5 (a padded 4th token), one with A < 0 and ratio 0.7
    old = torch.zeros(2, 4)
    new = torch.log(torch.tensor([[1.1, 1.3, 1.5, 1.0], [0.7, 1.0, 1.0, 1.0]])).requires_grad_()
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
    loss, counts = policy_loss(
        new, old, torch.tensor([1.0, -1.0]), mask / mask.sum(), mask, eps_low=0.2,
        eps_high=torch.tensor([0.4, 0.4]), eps_fixed=0.2,
    )  # fmt: skip
    # 1.3 lies past GRPO's 1.2 and within 1.4: the band; 1.5 is clipped high, 0.7 clipped low
    assert counts["band_fraction"] == 1 and counts["clip_high_fraction"] == 1 and counts["clip_low_fraction"] == 1
    assert counts["tokens"] == 4 and counts["ratio_max"] == pytest.approx(1.5) and counts["kl"] == 0
    loss.backward()
    # the clipped tokens carry no gradient, the band token does (GRPO's fixed clip would cut it too)
    assert new.grad[0, 1] != 0 and new.grad[0, 2] == 0 and new.grad[1, 0] == 0 and new.grad[0, 3] == 0
