"""Losses against hand-computed values."""

import math

import pytest
import torch

from rlc_runtime.algorithms.losses import (
    agg_loss,
    entropy_from_logits,
    kl_penalty,
    log_probs_from_logits,
    policy_loss,
    value_loss,
)

LOSS = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0]])
MASK = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])


@pytest.mark.parametrize(("mode", "expected"), [
    ("token-mean", (1 + 2 + 3 + 4) / 4),
    ("seq-mean-token-sum", (6 + 4) / 2),
    ("seq-mean-token-mean", (2 + 4) / 2),
    ("seq-mean-token-sum-norm", 10 / 3),
])
def test_aggregation_modes(mode: str, expected: float) -> None:
    assert agg_loss(LOSS, MASK, mode).item() == pytest.approx(expected)


def test_unknown_mode_names_the_allowed_ones() -> None:
    with pytest.raises(ValueError, match="token-mean"):
        agg_loss(LOSS, MASK, "mean")


def test_ppo_clip_by_hand() -> None:
    old = torch.zeros(1, 3)
    new = torch.log(torch.tensor([[1.5, 0.5, 1.0]]))  # ratios 1.5, 0.5, 1.0
    adv = torch.tensor([[1.0, -1.0, 2.0]])
    loss, clipfrac, kl, _ = policy_loss(old, new, adv, torch.ones(1, 3), 0.2, 0.2)
    # token 0: max(-1.5, -1.2) = -1.2 (clipped); token 1: max(0.5, 0.8) = 0.8 (clipped); token 2: -2
    assert loss.item() == pytest.approx((-1.2 + 0.8 - 2.0) / 3)
    assert clipfrac.item() == pytest.approx(2 / 3)
    assert kl.item() == pytest.approx(-(math.log(1.5) + math.log(0.5)) / 3)


def test_dual_clip_bounds_negative_advantages() -> None:
    new = torch.log(torch.tensor([[10.0]]))  # ratio 10 on a negative advantage: bounded by clip_ratio_c = 3
    loss, _, _, lower = policy_loss(torch.zeros(1, 1), new, torch.tensor([[-1.0]]), torch.ones(1, 1), 0.2, 0.2, 3.0)
    assert loss.item() == pytest.approx(3.0) and lower.item() == 1.0


def test_kl_estimators() -> None:
    logp, ref = torch.tensor([0.0]), torch.tensor([math.log(0.5)])  # delta = ln 2
    d = math.log(2)
    assert kl_penalty(logp, ref, "k1").item() == pytest.approx(d)
    assert kl_penalty(logp, ref, "mse").item() == pytest.approx(0.5 * d * d)
    assert kl_penalty(logp, ref, "low_var_kl").item() == pytest.approx(0.5 + d - 1)  # exp(-d) + d - 1
    with pytest.raises(ValueError):
        kl_penalty(logp, ref, "full")


def test_entropy_and_log_probs_match_softmax() -> None:
    logits = torch.tensor([[2.0, 0.0, -1.0]])
    probs = torch.softmax(logits, -1)
    assert entropy_from_logits(logits).item() == pytest.approx(-(probs * probs.log()).sum().item(), abs=1e-6)
    assert log_probs_from_logits(logits, torch.tensor([1])).item() == pytest.approx(probs[0, 1].log().item())


def test_value_loss_clips() -> None:
    values, old, returns = torch.tensor([[2.0]]), torch.tensor([[0.0]]), torch.tensor([[2.0]])
    # clipped prediction 0.5: error 2.25 > unclipped 0 -> 0.5 * 2.25
    loss, clipfrac = value_loss(values, returns, old, torch.ones(1, 1), cliprange_value=0.5)
    assert loss.item() == pytest.approx(1.125) and clipfrac.item() == 1.0
