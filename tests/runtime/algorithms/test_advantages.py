"""Advantage estimators against examples worked out by hand (numbers in the comments)."""

import pytest
import torch

from rlc_runtime.algorithms.advantages import gae_advantage, grpo_outcome_advantage, rloo_outcome_advantage
from rlc_runtime.algorithms.kl import KLController

MASK = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0], [1.0, 0.0, 0.0], [1.0, 1.0, 1.0]])


def outcome(scores: list[float]) -> torch.Tensor:
    """Scores on the last response token, as the trainer places them."""
    rewards = torch.zeros_like(MASK)
    for row, score in enumerate(scores):
        rewards[row, int(MASK[row].sum()) - 1] = score
    return rewards


def test_grpo_normalises_within_each_group() -> None:
    # group 0 = rows 0,1 with scores 1, 0: mean 0.5, sample std 0.7071 -> +-0.7071
    # group 1 = rows 2,3 with scores 1, 1: mean 1 -> 0 (no signal when all agree)
    adv, returns = grpo_outcome_advantage(outcome([1, 0, 1, 1]), MASK, torch.tensor([0, 0, 1, 1]))
    assert torch.allclose(adv[0], torch.tensor([0.7071, 0.7071, 0.0]), atol=1e-4)
    assert torch.allclose(adv[1], torch.tensor([-0.7071, -0.7071, -0.7071]), atol=1e-4)
    assert torch.equal(adv[2:], torch.zeros(2, 3)) and torch.equal(adv, returns)


def test_grpo_without_std_and_singleton_groups() -> None:
    adv, _ = grpo_outcome_advantage(outcome([3, 1, 2, 5]), MASK, torch.tensor([0, 0, 1, 2]), norm_by_std=False)
    # group 0: mean 2 -> +1, -1; groups of one keep their score (mean 0, std 1 as verl)
    assert adv[:, 0].tolist() == [1.0, -1.0, 2.0, 5.0]
    assert adv[0, 2] == 0  # padding stays zero


def test_rloo_leaves_one_out() -> None:
    # group of 3 with scores 1, 0, 0: 1 - mean(0,0) = 1; 0 - mean(1,0) = -0.5
    mask = torch.ones(3, 1)
    adv, _ = rloo_outcome_advantage(torch.tensor([[1.0], [0.0], [0.0]]), mask, torch.tensor([0, 0, 0]))
    assert torch.allclose(adv[:, 0], torch.tensor([1.0, -0.5, -0.5]))


def test_gae_by_hand() -> None:
    # one sample, 3 tokens, reward 1 at the end, values 0.5 each, gamma 1, lambda 1:
    # deltas: t2 = 1 - 0.5 = 0.5; t1 = 0 + 0.5 - 0.5 = 0; t0 = 0
    # advantages (before whitening) = returns-to-go minus value = [0.5, 0.5, 0.5]; returns = 1 each
    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    values = torch.tensor([[0.5, 0.5, 0.5], [0.2, 0.4, 9.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    adv, returns = gae_advantage(rewards, values, mask, gamma=1.0, lam=1.0)
    assert torch.allclose(returns[0], torch.ones(3))
    # second row: the padded token's value (9.0) must not leak back: returns [1, 1] on real tokens
    assert torch.allclose(returns[1, :2], torch.ones(2))
    raw = returns - values  # whitening keeps the order: the 0.8 advantage stays the largest
    assert torch.argmax((adv * mask)[1, :2]) == torch.argmax(raw[1, :2])


def test_adaptive_kl_moves_towards_target() -> None:
    controller = KLController(0.1, target=0.05, horizon=10)
    controller.update(current_kl=0.1, n_steps=1)  # twice the target: error clipped to 0.2 -> x1.02
    assert controller.value == pytest.approx(0.102)
