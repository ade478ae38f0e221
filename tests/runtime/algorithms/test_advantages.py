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
    from rlc.config.algorithm import ADV_ESTIMATORS
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


def otb_example(tool_hole: bool = False) -> dict[str, torch.Tensor | list[str]]:
    """Group a: row 0 (3 tokens, score 1, pi 0.5, sum pi^2 0.5: w = 1 - 1 + 0.5 = 0.5, W = 0.5, 1.0, 1.5) and
    row 1 (2 tokens, score 0, pi 0.25, sum pi^2 0.25: w = 0.75, W = 0.75, 1.5); group b: row 2 alone (1 token,
    score 2); row 3 of group a has no response token. With `tool_hole`, row 0's second position is a tool output
    (masked), its tokens at positions 0, 2, 3."""
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.0] * 4])
    if tool_hole:
        mask[0] = torch.tensor([1.0, 0.0, 1.0, 1.0])
    rewards = torch.zeros(4, 4)
    rewards[0, 3 if tool_hole else 2], rewards[2, 0] = 1.0, 2.0
    pi = torch.tensor([[0.5] * 4, [0.25] * 4, [0.5] * 4, [0.5] * 4])
    return {"token_level_rewards": rewards, "response_mask": mask, "group_index": ["a", "a", "b", "a"],
            "old_log_probs": pi.log(), "sum_pi_squared": pi.clone()}


def test_optimal_token_baseline_per_position_zero_tail_and_groups_of_one() -> None:
    from rlc_runtime.algorithms.advantages import optimal_token_baseline_advantage

    # B_0 = (1 x 0.5 + 0 x 0.75) / 1.25 = 0.4; B_1 = (1 x 1.0 + 0) / 2.5 = 0.4; position 2 only row 0 reaches: its
    # own return would be its baseline (advantage 0); the zero tail gives it none (advantage 1).
    adv, returns = optimal_token_baseline_advantage(**otb_example())
    assert adv[0].tolist() == pytest.approx([0.6, 0.6, 1.0, 0.0])
    assert adv[1].tolist() == pytest.approx([-0.4, -0.4, 0.0, 0.0])
    assert adv[2].tolist() == [2.0, 0.0, 0.0, 0.0] and adv[3].tolist() == [0.0] * 4  # alone; no tokens
    assert returns[0].tolist() == [1.0, 1.0, 1.0, 0.0]
    adv, _ = optimal_token_baseline_advantage(**otb_example(), handle_zero_tail=False)
    assert adv[0, 2].item() == pytest.approx(0.0, abs=1e-6)


def test_optimal_token_baseline_scales_w_by_squared_importance_weights() -> None:
    from rlc_runtime.algorithms.advantages import optimal_token_baseline_advantage

    # Row 1's weights 2: its w is 4 x 0.75 = 3, W = 3, 6: B_0 = 0.5 / 3.5 = 1/7, B_1 = 1 / 7.
    weights = torch.ones(4, 4)
    weights[1] = 2.0
    adv, _ = optimal_token_baseline_advantage(**otb_example(), rollout_is_weights=weights)
    assert adv[0, :2].tolist() == pytest.approx([6 / 7, 6 / 7]) and adv[1, :2].tolist() == pytest.approx([-1 / 7] * 2)


def test_optimal_token_baseline_all_equal_scores_give_no_signal() -> None:
    from rlc_runtime.algorithms.advantages import optimal_token_baseline_advantage

    # Both rows score 1 over 2 tokens: every baseline is a weighted mean of 1s.
    rewards = torch.tensor([[0.0, 1.0], [0.0, 1.0]])
    adv, _ = optimal_token_baseline_advantage(rewards, torch.ones(2, 2), [0, 0], torch.tensor([[-1.0, -2.0]] * 2),
                                              torch.full((2, 2), 0.3))
    assert adv.abs().max().item() < 1e-6


def test_tir_optimal_token_baseline_counts_only_the_policys_tokens() -> None:
    from rlc_runtime.algorithms.advantages import (
        optimal_token_baseline_advantage,
        tir_optimal_token_baseline_advantage,
    )

    # Row 0's k-th own token (positions 0, 2, 3) meets row 1's k-th: the numbers of the example above, in place.
    adv, _ = tir_optimal_token_baseline_advantage(**otb_example(tool_hole=True))
    assert adv[0].tolist() == pytest.approx([0.6, 0.0, 0.6, 1.0])
    assert adv[1].tolist() == pytest.approx([-0.4, -0.4, 0.0, 0.0])
    assert adv[2].tolist() == [2.0, 0.0, 0.0, 0.0] and adv[3].tolist() == [0.0] * 4
    # Without holes it is the optimal token baseline.
    plain = otb_example()
    torch.testing.assert_close(tir_optimal_token_baseline_advantage(**plain)[0],
                               optimal_token_baseline_advantage(**plain)[0])


def test_gdpo_normalises_each_component_in_its_group_then_whitens_the_sum() -> None:
    from rlc_runtime.algorithms.advantages import gdpo_advantage

    # Groups (0, 1), (2, 3). format 1, 0 | 1, 1 -> +-1/sqrt2 (std of two values |a-b|/sqrt2) | 0, 0 (all equal);
    # accuracy 0, 1 | 1, 0 -> -+1/sqrt2 | +-1/sqrt2. Weights 1, 2: sums -1/sqrt2, 1/sqrt2, sqrt2, -sqrt2; mean 0,
    # unbiased variance (0.5 + 0.5 + 2 + 2) / 3 = 5/3: whitened -sqrt(0.3), sqrt(0.3), sqrt(1.2), -sqrt(1.2).
    components = torch.tensor([[1.0, 0.0, 1.0, 1.0], [0.0, 1.0, 1.0, 0.0]])
    adv, _ = gdpo_advantage(components, [1.0, 2.0], [0, 0, 1, 1], torch.ones(4, 1))
    assert adv[:, 0].tolist() == pytest.approx([-0.3 ** 0.5, 0.3 ** 0.5, 1.2 ** 0.5, -1.2 ** 0.5], rel=1e-4)
    same, _ = gdpo_advantage(torch.ones(2, 4), None, [0, 0, 1, 1], torch.ones(4, 1))
    assert same.abs().max().item() == 0.0  # all-equal components: no signal
    with pytest.raises(ValueError, match="gdpo_reward_weights has 1 values for 2 reward keys"):
        gdpo_advantage(components, [1.0], [0, 0, 1, 1], torch.ones(4, 1))


def test_gdpo_group_of_one_and_masking() -> None:
    from rlc_runtime.algorithms.advantages import gdpo_advantage

    # One component; a group of one keeps its raw score (GRPO's mean 0, std 1): 3, and the pair 1, 0 gives
    # +-1/sqrt2. Whitened over the 4 response tokens (row 0 has 2): values 3, 3, 0.7071, -0.7071.
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0], [1.0, 0.0]])
    adv, _ = gdpo_advantage(torch.tensor([[3.0, 1.0, 0.0]]), None, [0, 1, 1], mask)
    values = torch.tensor([3.0, 3.0, 2 ** -0.5, -(2 ** -0.5)])
    expected = (values - values.mean()) / values.std()
    assert adv[mask.bool()].tolist() == pytest.approx(expected.tolist(), rel=1e-5)
    assert adv[1, 1].item() == 0.0 and adv[2, 1].item() == 0.0
