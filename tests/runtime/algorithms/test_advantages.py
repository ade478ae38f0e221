"""Advantage estimators against examples worked out by hand (the arithmetic is in the comments)."""

import math
from types import SimpleNamespace

import pytest
import torch

from rlc_runtime.algorithms.advantages import (
    AdvantageInputs,
    compute_advantage,
    gae_advantage,
    grpo_outcome_advantage,
    reinforce_plus_plus_advantage,
    rloo_outcome_advantage,
)
from rlc_runtime.algorithms.kl import KLController

EPS = 1e-6
MASK = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0], [1.0, 0.0, 0.0], [1.0, 1.0, 1.0]])


def test_grpo_normalises_within_each_group() -> None:
    # group "a" = rows 0, 1 with scores 1, 0: mean 0.5, sample std sqrt((0.25 + 0.25) / 1) = 0.70711
    #   -> +-0.5 / 0.70711 = +-0.70711 on every response token, 0 on padding
    # group "b" = rows 2, 3 with scores 1, 1: mean 1 -> exactly 0 (no signal when the samples agree)
    adv, returns = grpo_outcome_advantage(torch.tensor([1.0, 0.0, 1.0, 1.0]), ["a", "a", "b", "b"], MASK)
    assert torch.allclose(adv[0], torch.tensor([0.70711, 0.70711, 0.0]), atol=1e-5)
    assert torch.allclose(adv[1], torch.tensor([-0.70711, -0.70711, -0.70711]), atol=1e-5)
    assert torch.equal(adv[2:], torch.zeros(2, 3))
    assert torch.equal(adv, returns)


def test_grpo_three_samples_with_and_without_std() -> None:
    # scores 3, 1, 2: mean 2, deviations 1, -1, 0, sample variance (1 + 1 + 0) / 2 = 1, std 1
    scores, mask = torch.tensor([3.0, 1.0, 2.0]), torch.ones(3, 2)
    adv, _ = grpo_outcome_advantage(scores, torch.tensor([7, 7, 7]), mask)
    assert torch.allclose(adv[:, 0], torch.tensor([1.0, -1.0, 0.0]) / (1 + EPS))
    adv, _ = grpo_outcome_advantage(scores, torch.tensor([7, 7, 7]), mask, norm_by_std=False)  # Dr. GRPO
    assert adv[:, 1].tolist() == [1.0, -1.0, 0.0]


def test_grpo_group_of_one_keeps_its_score() -> None:
    # verl: a group of one has mean 0 and std 1, so its advantage is score / (1 + eps)
    adv, _ = grpo_outcome_advantage(torch.tensor([5.0, 2.0, 4.0]), [0, 1, 1], torch.ones(3, 1))
    assert adv[0, 0].item() == pytest.approx(5.0 / (1 + EPS))
    # group 1: 2, 4 -> mean 3, std sqrt(2) -> -+1 / 1.41421
    assert adv[1:, 0].tolist() == pytest.approx([-0.70711, 0.70711], abs=1e-5)
    adv, _ = grpo_outcome_advantage(torch.tensor([5.0]), [0], torch.ones(1, 1), norm_by_std=False)
    assert adv.item() == 5.0


def test_grpo_equal_inexact_scores_give_no_signal() -> None:
    # 0.1 has no exact binary form; the group mean may differ from it in the last bit, never by more
    adv, _ = grpo_outcome_advantage(torch.full((4,), 0.1), [0, 0, 0, 0], torch.ones(4, 3))
    assert adv.abs().max().item() < 1e-6


def test_grpo_all_masked_row_and_bad_index() -> None:
    mask = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    adv, _ = grpo_outcome_advantage(torch.tensor([1.0, 0.0]), [0, 0], mask)
    assert adv[0].tolist() == [0.0, 0.0] and adv[1, 0].item() < 0
    with pytest.raises(ValueError, match="3 scores but 2 group ids"):
        grpo_outcome_advantage(torch.zeros(3), [0, 0], torch.ones(3, 1))


def test_rloo_leaves_one_out() -> None:
    # group of 3 with scores 1, 0, 0: 1 - mean(0, 0) = 1; 0 - mean(1, 0) = -0.5; a group of one keeps 4
    adv, _ = rloo_outcome_advantage(torch.tensor([1.0, 0.0, 0.0, 4.0]), [0, 0, 0, 1], torch.ones(4, 1))
    assert adv[:, 0].tolist() == pytest.approx([1.0, -0.5, -0.5, 4.0])


def test_gae_by_hand() -> None:
    # gamma 0.9, lambda 0.8 (gamma * lambda = 0.72), rewards 0, 0, 1, values 0.2, 0.4, 0.6:
    # t=2: delta = 1 + 0.9 * 0 - 0.6 = 0.4             A2 = 0.4
    # t=1: delta = 0 + 0.9 * 0.6 - 0.4 = 0.14          A1 = 0.14 + 0.72 * 0.4 = 0.428
    # t=0: delta = 0 + 0.9 * 0.4 - 0.2 = 0.16          A0 = 0.16 + 0.72 * 0.428 = 0.46816
    # returns = A + V = 0.66816, 0.828, 1.0
    # whitened: mean 0.432053, unbiased std 0.034261 -> 1.0539, -0.1183, -0.9356
    rewards, values = torch.tensor([[0.0, 0.0, 1.0]]), torch.tensor([[0.2, 0.4, 0.6]])
    adv, returns = gae_advantage(rewards, values, torch.ones(1, 3), gamma=0.9, lam=0.8)
    assert returns[0].tolist() == pytest.approx([0.66816, 0.828, 1.0], abs=1e-6)
    assert adv[0].tolist() == pytest.approx([1.0539, -0.1183, -0.9356], abs=1e-4)


def test_gae_carries_over_masked_tokens() -> None:
    # the middle token is masked (a tool's output, say): its value 5.0 must not enter any TD error.
    # t=2: A2 = 1 - 0.6 = 0.4; t=1 masked: A and the next value (0.6) carry over; A1 = 0.4 (unused)
    # t=0: delta = 0 + 0.9 * 0.6 - 0.2 = 0.34, A0 = 0.34 + 0.72 * 0.4 = 0.628 -> return 0.828
    # whitened over the two real tokens (0.628, 0.4): +-0.70711; the masked token's advantage is 0
    rewards, values = torch.tensor([[0.0, 0.0, 1.0]]), torch.tensor([[0.2, 5.0, 0.6]])
    adv, returns = gae_advantage(rewards, values, torch.tensor([[1.0, 0.0, 1.0]]), gamma=0.9, lam=0.8)
    assert returns[0, 0].item() == pytest.approx(0.828) and returns[0, 2].item() == pytest.approx(1.0)
    assert adv[0].tolist() == pytest.approx([0.70711, 0.0, -0.70711], abs=1e-5)


def test_reinforce_plus_plus_by_hand() -> None:
    # gamma 0.5, rewards 0, 1: returns-to-go 0.5, 1; whitened: mean 0.75, unbiased std 0.35355 -> -+0.70711
    adv, returns = reinforce_plus_plus_advantage(torch.tensor([[0.0, 1.0, 0.0]]), torch.tensor([[1.0, 1.0, 0.0]]),
                                                 gamma=0.5)
    assert returns[0, :2].tolist() == [0.5, 1.0]
    assert adv[0].tolist() == pytest.approx([-0.70711, 0.70711, 0.0], abs=1e-5)


def test_compute_advantage_dispatches_on_the_config() -> None:
    rewards = torch.tensor([[0.0, 1.0], [0.0, 0.0]])  # outcome scores 1 and 0 on the last token
    algo = SimpleNamespace(adv_estimator="grpo", norm_adv_by_std_in_grpo=False, gamma=1.0, lam=1.0)
    adv, _ = compute_advantage(algo, AdvantageInputs(rewards, torch.ones(2, 2), torch.tensor([0, 0])))
    assert adv.tolist() == [[0.5, 0.5], [-0.5, -0.5]]
    with pytest.raises(ValueError, match="gae needs values"):
        compute_advantage(SimpleNamespace(adv_estimator="gae"), AdvantageInputs(rewards, torch.ones(2, 2), [0, 0]))
    with pytest.raises(ValueError, match="remax needs reward_baselines"):
        compute_advantage(SimpleNamespace(adv_estimator="remax"), AdvantageInputs(rewards, torch.ones(2, 2), [0, 0]))
    with pytest.raises(ValueError, match="'nope' is not one of"):
        compute_advantage(SimpleNamespace(adv_estimator="nope"), AdvantageInputs(rewards, torch.ones(2, 2), [0, 0]))


def test_adaptive_kl_moves_towards_target() -> None:
    controller = KLController(0.1, target=0.05, horizon=10)
    controller.update(current_kl=0.1, n_steps=1)  # twice the target: error clipped to 0.2 -> x (1 + 0.2 / 10)
    assert controller.value == pytest.approx(0.102)


def test_the_registry_is_the_schemas_list_of_estimators() -> None:
    from rlc.config.algorithm import IMPLEMENTED_ESTIMATORS as ADV_ESTIMATORS
    from rlc_runtime.algorithms.advantages import ADVANTAGE_ESTIMATORS

    assert set(ADVANTAGE_ESTIMATORS) == set(ADV_ESTIMATORS)


def test_grpo_passk_rewards_only_the_best_sample() -> None:
    from rlc_runtime.algorithms.advantages import grpo_passk_advantage

    # scores 1, 0, 0.5: best minus second best = 0.5; sample std of the group = 0.5 -> 1.0 when normalised.
    scores, mask = torch.tensor([1.0, 0.0, 0.5]), torch.ones(3, 1)
    adv, _ = grpo_passk_advantage(scores, [7, 7, 7], mask, norm_by_std=False)
    assert adv[:, 0].tolist() == [0.5, 0.0, 0.0]
    adv, _ = grpo_passk_advantage(scores, [7, 7, 7], mask)
    assert adv[:, 0].tolist() == pytest.approx([1.0, 0.0, 0.0], abs=1e-5)
    adv, _ = grpo_passk_advantage(torch.tensor([1.0, 1.0]), [0, 0], torch.ones(2, 1))  # all equal: nothing
    assert adv.abs().sum() == 0
    with pytest.raises(ValueError, match="at least 2 samples"):
        grpo_passk_advantage(torch.tensor([1.0]), [0], torch.ones(1, 1))


def test_reinforce_plus_plus_baseline_by_hand() -> None:
    from rlc_runtime.algorithms.advantages import reinforce_plus_plus_baseline_advantage

    # groups {1, 0} (mean 0.5) and {1} alone (baseline 0): 0.5, -0.5, 1 on lengths 1, 1, 2 -> tokens 0.5, -0.5,
    # 1, 1: mean 0.5, unbiased variance (0 + 1 + 0.25 + 0.25) / 3 = 0.5 -> whitened 0, -1.41421, 0.70711 x 2.
    mask = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 1.0]])
    adv, _ = reinforce_plus_plus_baseline_advantage(torch.tensor([1.0, 0.0, 1.0]), [0, 0, 1], mask)
    assert adv.flatten().tolist() == pytest.approx([0.0, 0.0, -1.41421, 0.0, 0.70711, 0.70711], abs=1e-4)


def test_opo_baseline_is_length_weighted() -> None:
    from rlc_runtime.algorithms.advantages import opo_advantage

    # scores 1, 0 with lengths 1, 3: baseline (1 x 1 + 3 x 0) / 4 = 0.25; a group of one keeps its score.
    mask = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    adv, _ = opo_advantage(torch.tensor([1.0, 0.0, 0.7]), [0, 0, 1], mask)
    assert adv.flatten().tolist() == pytest.approx([0.75, 0, 0, -0.25, -0.25, -0.25, 0.7, 0, 0])


def test_gpg_scales_by_the_share_of_non_zero_scores() -> None:
    from rlc_runtime.algorithms.advantages import gpg_advantage

    # 4 samples, 1 non-zero: alpha = 4; group means 0.5 and 0 -> 4 x (0.5, -0.5, 0, 0).
    adv, _ = gpg_advantage(torch.tensor([1.0, 0.0, 0.0, 0.0]), [0, 0, 1, 1], torch.ones(4, 1))
    assert adv[:, 0].tolist() == [2.0, -2.0, 0.0, 0.0]
    adv, _ = gpg_advantage(torch.zeros(2), [0, 0], torch.ones(2, 1))  # all zero: no division by zero
    assert adv.abs().sum() == 0


def test_remax_subtracts_the_greedy_score() -> None:
    from rlc_runtime.algorithms.advantages import remax_advantage

    adv, returns = remax_advantage(torch.tensor([[0.0, 1.0, 0.0]]), torch.tensor([[1.0, 1.0, 0.0]]),
                                   torch.tensor([0.3]))
    assert returns[0, :2].tolist() == [1.0, 1.0] and adv[0].tolist() == pytest.approx([0.7, 0.7, 0.0])


def test_optimal_token_baseline_by_hand() -> None:
    from rlc_runtime.algorithms.advantages import optimal_token_baseline_advantage

    # pi = 0.5, 0.25, sum pi^2 = 0.5: w = 1 - 2 pi + 0.5 = 0.5, 1.0; baseline (0.5 x 1 + 1 x 0) / 1.5 = 1/3.
    adv, _ = optimal_token_baseline_advantage(torch.tensor([[1.0], [0.0]]), torch.ones(2, 1), [0, 0],
                                              torch.tensor([[math.log(0.5)], [math.log(0.25)]]),
                                              torch.tensor([[0.5], [0.5]]))
    assert adv[:, 0].tolist() == pytest.approx([2 / 3, -1 / 3])
    adv, _ = optimal_token_baseline_advantage(torch.tensor([[1.0]]), torch.ones(1, 1), [0], torch.zeros(1, 1),
                                              torch.ones(1, 1))
    assert adv.tolist() == [[1.0]]  # a group of one has no baseline
