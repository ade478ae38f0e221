"""Losses against hand-computed values (the arithmetic is in the comments)."""

import math

import pytest
import torch

from rlc_runtime.algorithms.losses import (
    AGG_MODES,
    agg_loss,
    entropy_from_logits,
    kl_penalty,
    log_probs_from_logits,
    policy_loss,
    value_loss,
)

# Row 0: three tokens; row 1: one token; row 2: all padding (left out of the per-sequence means).
LOSS = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0], [9.0, 9.0, 9.0]])
MASK = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])


@pytest.mark.parametrize(("mode", "expected"), [
    ("token-mean", (1 + 2 + 3 + 4) / 4),            # 2.5
    ("seq-mean-token-sum", (6 + 4) / 2),            # sums 6 and 4 over the two rows with tokens: 5
    ("seq-mean-token-mean", (2 + 4) / 2),           # means 2 and 4: 3
    ("seq-mean-token-sum-norm", (6 + 4) / 3),       # all tokens' sum over T = 3
])
def test_aggregation_modes(mode: str, expected: float) -> None:
    assert agg_loss(LOSS, MASK, mode).item() == pytest.approx(expected)


@pytest.mark.parametrize("mode", AGG_MODES)
def test_all_padding_gives_zero_loss_and_zero_gradient(mode: str) -> None:
    loss_mat = torch.full((2, 3), 7.0, requires_grad=True)
    loss = agg_loss(loss_mat, torch.zeros(2, 3), mode)
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(loss_mat.grad, torch.zeros(2, 3))


def test_unknown_mode_names_the_allowed_ones() -> None:
    with pytest.raises(ValueError, match="'mean' is not one of: token-mean, seq-mean-token-sum"):
        agg_loss(LOSS, MASK, "mean")


def test_ppo_clip_by_hand() -> None:
    old = torch.zeros(1, 3)
    new = torch.log(torch.tensor([[1.5, 0.5, 1.0]])).requires_grad_()  # ratios 1.5, 0.5, 1.0
    adv = torch.tensor([[1.0, -1.0, 2.0]])
    loss, clipfrac, kl, lower = policy_loss(old, new, adv, torch.ones(1, 3), 0.2, 0.2)
    # token 0 (A = 1):  max(-1.5, -1.2) = -1.2, the clipped term
    # token 1 (A = -1): max(0.5, 0.8) = 0.8, the clipped term; below the dual bound 3
    # token 2 (A = 2):  ratio 1 is inside the clip: -2
    assert loss.item() == pytest.approx((-1.2 + 0.8 - 2.0) / 3)
    assert clipfrac.item() == pytest.approx(2 / 3) and lower.item() == 0.0
    assert kl.item() == pytest.approx(-(math.log(1.5) + math.log(0.5)) / 3)  # mean(old - new)
    # gradient: clipped tokens get none; token 2: d(-A * exp(logp - old))/dlogp / 3 = -2 * 1 / 3
    loss.backward()
    assert new.grad[0].tolist() == pytest.approx([0.0, 0.0, -2 / 3])


def test_dual_clip_bounds_negative_advantages() -> None:
    # ratio 10 on A = -1: max(10, 1.2) = 10, capped at -A * clip_ratio_c = 3
    new = torch.log(torch.tensor([[10.0]]))
    loss, clipfrac, _, lower = policy_loss(torch.zeros(1, 1), new, torch.tensor([[-1.0]]), torch.ones(1, 1),
                                           0.2, 0.28, clip_ratio_c=3.0)
    assert loss.item() == pytest.approx(3.0) and lower.item() == 1.0 and clipfrac.item() == 0.0
    with pytest.raises(ValueError, match="clip_ratio_c must be greater than 1"):
        policy_loss(torch.zeros(1, 1), new, torch.tensor([[-1.0]]), torch.ones(1, 1), 0.2, 0.2, clip_ratio_c=1.0)


def test_policy_loss_ignores_padding_and_aggregates_by_sequence() -> None:
    # row 0: one token, ratio 1, A = 1 -> -1; row 1: two tokens, ratio 1, A = 2 -> -2 each; padding holds junk
    old = torch.tensor([[0.0, 0.0], [0.0, 0.0]])
    new = torch.tensor([[0.0, -math.inf], [0.0, 0.0]])
    adv = torch.tensor([[1.0, 5.0], [2.0, 2.0]])
    mask = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    token_mean, *_ = policy_loss(old, new, adv, mask, 0.2, 0.2)
    seq_mean, *_ = policy_loss(old, new, adv, mask, 0.2, 0.2, loss_agg_mode="seq-mean-token-mean")
    assert token_mean.item() == pytest.approx((-1 - 2 - 2) / 3)
    assert seq_mean.item() == pytest.approx((-1 + -2) / 2)


def test_kl_estimators_by_hand() -> None:
    # log p = 0, log q = ln 0.5: delta = ln 2 = 0.69315
    logp, ref = torch.tensor([0.0]), torch.tensor([math.log(0.5)])
    d = math.log(2)
    assert kl_penalty(logp, ref, "k1").item() == pytest.approx(d)
    assert kl_penalty(logp, ref, "kl").item() == pytest.approx(d)
    assert kl_penalty(ref, logp, "abs").item() == pytest.approx(d)
    assert kl_penalty(logp, ref, "mse").item() == pytest.approx(0.5 * d * d)  # 0.24023
    assert kl_penalty(logp, ref, "k2").item() == pytest.approx(0.5 * d * d)
    # k3: q/p - log(q/p) - 1 = 0.5 + ln 2 - 1 = 0.19315
    assert kl_penalty(logp, ref, "low_var_kl").item() == pytest.approx(0.5 + d - 1)
    assert kl_penalty(logp, ref, "k3").item() == pytest.approx(0.5 + d - 1)
    # far apart (q/p = e^30): clamped to exp(20) - 20 - 1, then to 10
    assert kl_penalty(torch.tensor([-30.0]), torch.tensor([0.0]), "k3").item() == 10.0


def test_kl_full_and_unknown_kinds_are_refused() -> None:
    with pytest.raises(ValueError, match="'full'.*not supported"):
        kl_penalty(torch.zeros(1), torch.zeros(1), "full")
    with pytest.raises(ValueError, match="unknown kl type 'k4'"):
        kl_penalty(torch.zeros(1), torch.zeros(1), "k4")


def test_entropy_by_hand_and_stable() -> None:
    assert entropy_from_logits(torch.zeros(4)).item() == pytest.approx(math.log(4))  # uniform over 4
    # p = (0.5, 0.5, 0): -2 * 0.5 * ln 0.5 = ln 2, even with a logit 1000 below the others
    assert entropy_from_logits(torch.tensor([1000.0, 1000.0, 0.0])).item() == pytest.approx(math.log(2), abs=1e-4)
    logits = torch.tensor([[2.0, 0.0, -1.0]])
    probs = torch.softmax(logits.double(), -1)
    assert entropy_from_logits(logits).item() == pytest.approx(-(probs * probs.log()).sum().item(), abs=1e-6)


def test_log_probs_match_log_softmax_in_every_dtype() -> None:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 50, generator=generator) * 4
    labels = torch.randint(0, 50, (2, 5), generator=generator)
    reference = torch.log_softmax(logits.double(), -1).gather(-1, labels[..., None])[..., 0]
    assert torch.allclose(log_probs_from_logits(logits, labels).double(), reference, atol=1e-5)
    # bf16 logits: each row is upcast, so the only error left is bf16's rounding of the logits themselves
    rounded = logits.bfloat16()
    exact = torch.log_softmax(rounded.double(), -1).gather(-1, labels[..., None])[..., 0]
    result = log_probs_from_logits(rounded, labels)
    assert result.dtype == torch.float32 and torch.allclose(result.double(), exact, atol=1e-5)
    # by hand: logits (ln 1, ln 3) -> p = 1/4, 3/4
    two = torch.log(torch.tensor([[1.0, 3.0]]))
    assert log_probs_from_logits(two, torch.tensor([1])).item() == pytest.approx(math.log(0.75))


def test_value_loss_clips_by_hand() -> None:
    # token 0: vpred 2, old value 0, return 2, clip 0.5 -> clipped vpred 0.5: errors 0 vs 2.25 -> 2.25 (clipped)
    # token 1: vpred 0.2 is within 0.5 of 0: both errors (0.2 - 1)^2 = 0.64 -> 0.64 (not clipped)
    # loss = 0.5 * mean(2.25, 0.64) = 0.7225; clip fraction 1/2
    vpreds, values, returns = torch.tensor([[2.0, 0.2]]), torch.tensor([[0.0, 0.0]]), torch.tensor([[2.0, 1.0]])
    loss, clipfrac = value_loss(vpreds, returns, values, torch.ones(1, 2), cliprange_value=0.5)
    assert loss.item() == pytest.approx(0.7225) and clipfrac.item() == 0.5


def test_plus_suffix_keeps_the_value_and_takes_k2s_gradient() -> None:
    # log p - log q = ln 2: k3's value q/p - log(q/p) - 1 = 0.5 + ln 2 - 1; k2's gradient d(delta^2 / 2) = ln 2.
    logp = torch.tensor([math.log(0.5)], requires_grad=True)
    ref = torch.tensor([math.log(0.25)])
    value = kl_penalty(logp, ref, "k3+")
    value.backward()
    assert value.item() == pytest.approx(0.5 + math.log(2) - 1)
    assert logp.grad.item() == pytest.approx(math.log(2))


def test_sum_pi_squared_from_logits_by_hand() -> None:
    from rlc_runtime.algorithms.losses import sum_pi_squared_from_logits

    # logits ln 1, ln 1, ln 2 -> p = 1/4, 1/4, 1/2 -> 1/16 + 1/16 + 1/4 = 0.375; uniform over 4 -> 0.25; a huge
    # logit (no overflow) -> 1; in bfloat16 too, computed in float32.
    logits = torch.tensor([[[0.0, 0.0, math.log(2), -math.inf], [1.0, 1.0, 1.0, 1.0]],
                           [[1e4, 0.0, 0.0, 0.0], [5.0, 5.0, 5.0, 5.0]]])
    assert sum_pi_squared_from_logits(logits).flatten().tolist() == pytest.approx([0.375, 0.25, 1.0, 0.25])
    half = sum_pi_squared_from_logits(logits.to(torch.bfloat16))
    assert half.dtype == torch.float32 and half.flatten().tolist() == pytest.approx([0.375, 0.25, 1.0, 0.25],
                                                                                     rel=1e-2)
