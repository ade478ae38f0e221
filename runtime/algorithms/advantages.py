"""Advantage estimators as pure functions on tensors, with verl's semantics (verl/trainer/ppo/core_algos.py).

Outcome estimators (GRPO, RLOO) take one score per response and a group id per response (the prompt it answers),
and broadcast the resulting scalar over the response tokens. Token estimators (GAE, REINFORCE++) take rewards as
[B, T] tensors: the outcome score on the last response token, minus any KL penalty, as the trainer places them.
Group statistics are computed with index_add over contiguous group ids rather than a Python loop per sample, so
the cost stays flat for large rollout batches; the numbers are those of verl's loop.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from rlc_runtime.algorithms.masked import masked_mean, masked_whiten

__all__ = ["ADVANTAGE_ESTIMATORS", "AdvantageInputs", "compute_advantage", "gae_advantage",
           "grpo_outcome_advantage", "masked_mean", "masked_whiten", "reinforce_plus_plus_advantage",
           "rloo_outcome_advantage"]

GroupIndex = torch.Tensor | Sequence[Any]


def _group_ids(group_index: GroupIndex) -> torch.Tensor:
    """Any hashable labels (ints, uid strings) -> contiguous ids 0..G-1, in order of first appearance."""
    labels = group_index.tolist() if isinstance(group_index, torch.Tensor) else list(group_index)
    ids: dict[Any, int] = {}
    return torch.tensor([ids.setdefault(label, len(ids)) for label in labels], dtype=torch.long)


def _group_stats(scores: torch.Tensor, group_index: GroupIndex) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample (group mean, group sample std, group size)."""
    if len(group_index) != len(scores):
        raise ValueError(f"{len(scores)} scores but {len(group_index)} group ids")
    ids = _group_ids(group_index).to(scores.device)
    groups = int(ids.max()) + 1 if len(ids) else 0

    def per_group(values: torch.Tensor) -> torch.Tensor:
        return torch.zeros(groups, dtype=scores.dtype, device=scores.device).index_add_(0, ids, values)

    count = per_group(torch.ones_like(scores))
    mean = per_group(scores) / count
    # Two passes (centre, then square) rather than sum of squares minus square of sum: no cancellation.
    variance = per_group((scores - mean[ids]) ** 2) / (count - 1).clamp(min=1)
    return mean[ids], variance.sqrt()[ids], count[ids]


def grpo_outcome_advantage(scores: torch.Tensor, group_index: GroupIndex, response_mask: torch.Tensor,
                           norm_by_std: bool = True, eps: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """Each score minus its group's mean, over (the group's std + eps) when `norm_by_std`.

    A group of one has no baseline: verl takes mean 0 and std 1 for it, so its advantage is its raw score.
    `norm_by_std=False` is Dr. GRPO's variant. Returns (advantages, returns), both [B, T] and equal.
    """
    mean, std, count = _group_stats(scores, group_index)
    alone = count == 1
    mean = torch.where(alone, torch.zeros_like(mean), mean)
    centred = scores - mean
    if norm_by_std:
        centred = centred / (torch.where(alone, torch.ones_like(std), std) + eps)
    advantages = centred[:, None] * response_mask
    return advantages, advantages


def rloo_outcome_advantage(scores: torch.Tensor, group_index: GroupIndex,
                           response_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each score minus the mean of the other samples of its group (leave-one-out); a group of one keeps its score.

    score - mean(others) = n / (n - 1) * (score - group mean), which is the form computed here.
    """
    mean, _, count = _group_stats(scores, group_index)
    loo = torch.where(count > 1, (scores - mean) * count / (count - 1).clamp(min=1), scores)
    advantages = loo[:, None] * response_mask
    return advantages, advantages


def reinforce_plus_plus_advantage(token_level_rewards: torch.Tensor, response_mask: torch.Tensor,
                                  gamma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Discounted return-to-go per token, whitened over the batch; the return restarts after the response ends."""
    returns = torch.zeros_like(token_level_rewards)
    running = torch.zeros_like(token_level_rewards[:, 0])
    for t in reversed(range(token_level_rewards.shape[1])):
        running = token_level_rewards[:, t] + gamma * running
        returns[:, t] = running
        running = running * response_mask[:, t]
    return masked_whiten(returns, response_mask) * response_mask, returns


def gae_advantage(token_level_rewards: torch.Tensor, values: torch.Tensor, response_mask: torch.Tensor,
                  gamma: float, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016) on the critic's per-token values.

    Returns (advantages whitened over the mask, returns = raw advantages + values). A masked position neither adds
    a TD error nor passes its value back: both carry over it unchanged, as in verl (padding, tool-output tokens).
    """
    next_value = torch.zeros_like(values[:, 0])
    running = torch.zeros_like(next_value)
    reversed_advantages = []
    for t in reversed(range(token_level_rewards.shape[1])):
        mask = response_mask[:, t]
        delta = token_level_rewards[:, t] + gamma * next_value - values[:, t]
        running = (delta + gamma * lam * running) * mask + (1 - mask) * running
        next_value = values[:, t] * mask + (1 - mask) * next_value
        reversed_advantages.append(running)
    advantages = torch.stack(reversed_advantages[::-1], dim=1)
    returns = advantages + values
    return masked_whiten(advantages, response_mask) * response_mask, returns


def grpo_passk_advantage(scores: torch.Tensor, group_index: GroupIndex, response_mask: torch.Tensor,
                         norm_by_std: bool = True, eps: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """Pass@k training (Chen et al. 2025): only each group's best response gets an advantage, the best score minus
    the second best (over the group's std + eps when `norm_by_std`); the rest get 0. Ties go to the first sample."""
    ids = _group_ids(group_index)
    advantages = torch.zeros_like(scores)
    for group in range(int(ids.max()) + 1 if len(ids) else 0):
        members = torch.nonzero(ids == group).flatten()
        if len(members) < 2:
            raise ValueError(f"grpo_passk needs at least 2 samples per prompt; a group has {len(members)}")
        group_scores = scores[members]
        top = torch.topk(group_scores, 2)
        gap = top.values[0] - top.values[1]
        advantages[members[top.indices[0]]] = gap / (group_scores.std() + eps) if norm_by_std else gap
    advantages = advantages[:, None] * response_mask
    return advantages, advantages


def reinforce_plus_plus_baseline_advantage(scores: torch.Tensor, group_index: GroupIndex,
                                           response_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """REINFORCE++ with baseline (Hu et al. 2025): the score minus its group's mean (0 for a group of one),
    broadcast over the response and whitened over the whole batch's response tokens."""
    mean, _, count = _group_stats(scores, group_index)
    centred = scores - torch.where(count == 1, torch.zeros_like(mean), mean)
    tokens = centred[:, None] * response_mask
    advantages = masked_whiten(tokens, response_mask) * response_mask
    return advantages, advantages


def opo_advantage(scores: torch.Tensor, group_index: GroupIndex,
                  response_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """OPO (Hao et al. 2025): the score minus its group's length-weighted mean score, the baseline that is optimal
    for a policy gradient summed over tokens; a group of one keeps its score."""
    lengths = response_mask.sum(-1).to(scores.dtype)
    ids = _group_ids(group_index).to(scores.device)
    groups = int(ids.max()) + 1 if len(ids) else 0
    weighted = torch.zeros(groups, dtype=scores.dtype).index_add_(0, ids, lengths * scores)
    total = torch.zeros(groups, dtype=scores.dtype).index_add_(0, ids, lengths)
    count = torch.zeros(groups, dtype=scores.dtype).index_add_(0, ids, torch.ones_like(scores))
    baseline = torch.where(count[ids] > 1, weighted[ids] / total[ids].clamp(min=1e-8), torch.zeros_like(scores))
    advantages = (scores - baseline)[:, None] * response_mask
    return advantages, advantages


def gpg_advantage(scores: torch.Tensor, group_index: GroupIndex,
                  response_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """GPG (Chu et al. 2025): the score minus its group's mean, times batch size / number of non-zero scores
    (the paper's alpha, which undoes the dilution by groups that carry no signal); no std normalisation."""
    mean, _, count = _group_stats(scores, group_index)
    alpha = len(scores) / max(int(torch.count_nonzero(scores)), 1)
    centred = alpha * (scores - torch.where(count == 1, torch.zeros_like(mean), mean))
    advantages = centred[:, None] * response_mask
    return advantages, advantages


def remax_advantage(token_level_rewards: torch.Tensor, response_mask: torch.Tensor,
                    reward_baselines: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """ReMax (Li et al. 2023): the reward-to-go minus the score of the prompt's greedy response at every token."""
    returns = (token_level_rewards * response_mask).flip(-1).cumsum(-1).flip(-1)
    return returns - reward_baselines[:, None] * response_mask, returns


def _score_norm_weights(response_mask: torch.Tensor, old_log_probs: torch.Tensor, sum_pi_squared: torch.Tensor,
                        rollout_is_weights: torch.Tensor | None) -> torch.Tensor:
    """W_t = sum_{j<=t} ||grad_logits log pi(y_j)||^2 = sum_{j<=t} (1 - 2 pi_j + sum_v pi_v^2), the squared norm of
    a softmax policy's score function accumulated along the response; under rollout correction each step's term
    is scaled by the squared importance weight (the baseline that minimises the variance of the weighted
    gradient). Masked positions add nothing."""
    per_token = 1 - 2 * old_log_probs.exp() + sum_pi_squared
    if rollout_is_weights is not None:
        per_token = per_token * rollout_is_weights ** 2
    return (per_token * response_mask).cumsum(-1)


def _token_baselines(returns: torch.Tensor, weight: torch.Tensor, lengths: torch.Tensor, ids: torch.Tensor,
                     handle_zero_tail: bool, eps: float) -> torch.Tensor:
    """Per group and position t, B_t = sum_i G_it W_it / (sum_i W_it + eps) over the group's rows i, where each
    row's values past its `lengths` are 0. A group of one gets no baseline. With `handle_zero_tail`, the positions
    of a group's single longest row past the second longest get none either: there B_t would be the row's own
    return, and its advantage always 0."""
    groups = int(ids.max()) + 1 if len(ids) else 0
    width = returns.shape[1]
    numerator = torch.zeros(groups, width, dtype=returns.dtype).index_add_(0, ids, returns * weight)
    denominator = torch.zeros(groups, width, dtype=returns.dtype).index_add_(0, ids, weight)
    count = torch.zeros(groups, dtype=returns.dtype).index_add_(0, ids, torch.ones_like(returns[:, 0]))
    baselines = torch.where(count[ids, None] > 1, numerator[ids] / (denominator[ids] + eps),
                            torch.zeros_like(returns))
    if handle_zero_tail:
        for group in range(groups):
            rows = torch.nonzero(ids == group).flatten()
            if len(rows) < 2:
                continue
            ordered = torch.sort(lengths[rows], descending=True).values
            longest, second = int(ordered[0]), int(ordered[1])
            if longest > second:
                baselines[rows[int(torch.argmax(lengths[rows]))], second:] = 0.0
    return baselines


def optimal_token_baseline_advantage(token_level_rewards: torch.Tensor, response_mask: torch.Tensor,
                                     group_index: GroupIndex, old_log_probs: torch.Tensor,
                                     sum_pi_squared: torch.Tensor, rollout_is_weights: torch.Tensor | None = None,
                                     handle_zero_tail: bool = True,
                                     eps: float = 1e-8) -> tuple[torch.Tensor, torch.Tensor]:
    """Optimal token baseline (verl's OTB, Yingru Li's note "The Optimal Token Baseline"): a baseline per response
    position t and prompt, B_t = sum_i G_t W_t / sum_i W_t over the group's samples i, where G_t is the
    reward-to-go and W_t the score-norm weight of `_score_norm_weights`: the baseline that minimises the variance
    of a REINFORCE gradient whose per-sample noise grows with W. Returns (advantages G - B, returns G)."""
    returns = (token_level_rewards * response_mask).flip(-1).cumsum(-1).flip(-1)
    weight = _score_norm_weights(response_mask, old_log_probs, sum_pi_squared, rollout_is_weights) * response_mask
    ids = _group_ids(group_index).to(returns.device)
    baselines = _token_baselines(returns * response_mask, weight, response_mask.sum(-1), ids, handle_zero_tail, eps)
    return (returns - baselines) * response_mask, returns


def tir_optimal_token_baseline_advantage(token_level_rewards: torch.Tensor, response_mask: torch.Tensor,
                                         group_index: GroupIndex, old_log_probs: torch.Tensor,
                                         sum_pi_squared: torch.Tensor,
                                         rollout_is_weights: torch.Tensor | None = None,
                                         handle_zero_tail: bool = True,
                                         eps: float = 1e-8) -> tuple[torch.Tensor, torch.Tensor]:
    """The optimal token baseline for tool-interleaved responses (verl's tir_optimal_token_baseline): positions
    count the policy's own tokens only, so the k-th generated token of one sample is compared with the k-th of
    the others however many tool-output tokens (masked out) came before. Rows with no response token belong to
    no group. Without holes in the mask this is optimal_token_baseline."""
    returns = (token_level_rewards * response_mask).flip(-1).cumsum(-1).flip(-1)
    weight = _score_norm_weights(response_mask, old_log_probs, sum_pi_squared, rollout_is_weights)
    mask = response_mask.bool()
    lengths = mask.sum(-1)
    # Column k of the packed tensors holds each row's k-th response token (stable sort keeps the order).
    order = torch.sort((~mask).to(torch.int8), dim=-1, stable=True).indices
    packed_mask = torch.gather(mask, 1, order)
    packed_returns = torch.gather(returns, 1, order) * packed_mask
    packed_weight = torch.gather(weight, 1, order) * packed_mask
    present = torch.nonzero(lengths > 0).flatten()
    labels = group_index.tolist() if isinstance(group_index, torch.Tensor) else list(group_index)
    ids = _group_ids([labels[i] for i in present.tolist()]).to(returns.device)
    packed_advantages = torch.zeros_like(packed_returns)
    if len(present):
        baselines = _token_baselines(packed_returns[present], packed_weight[present], lengths[present], ids,
                                     handle_zero_tail, eps)
        packed_advantages[present] = (packed_returns[present] - baselines) * packed_mask[present]
    advantages = torch.zeros_like(returns).scatter_(1, order, packed_advantages)
    return advantages * response_mask, returns


def gdpo_advantage(component_scores: torch.Tensor, weights: Sequence[float] | None, group_index: GroupIndex,
                   response_mask: torch.Tensor, norm_by_std: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """GDPO (Group reward-Decoupled normalization Policy Optimization, arXiv 2601.05242): each reward component
    ([K, B]: K components of B samples) is normalised within its prompt's group as GRPO does, the results are
    summed with `weights` (default all 1), and the sum is whitened over the batch's response tokens, so that a
    component of large scale or spread cannot drown the others."""
    if weights is not None and len(weights) != len(component_scores):
        raise ValueError(f"gdpo_reward_weights has {len(weights)} values for {len(component_scores)} reward keys")
    total = torch.zeros_like(response_mask, dtype=component_scores.dtype)
    for k, scores in enumerate(component_scores):
        normalised, _ = grpo_outcome_advantage(scores, group_index, response_mask, norm_by_std)
        total = total + (weights[k] if weights is not None else 1.0) * normalised
    advantages = masked_whiten(total, response_mask) * response_mask
    return advantages, advantages


@dataclass
class AdvantageInputs:
    """What an estimator may read of a batch; each takes what it needs."""

    token_level_rewards: torch.Tensor
    response_mask: torch.Tensor
    group_index: GroupIndex
    values: torch.Tensor | None = None
    reward_baselines: torch.Tensor | None = None
    old_log_probs: torch.Tensor | None = None
    sum_pi_squared: torch.Tensor | None = None
    rollout_is_weights: torch.Tensor | None = None
    reward_components: torch.Tensor | None = None  # [K, B]: the reward function's algorithm.gdpo_reward_keys

    @property
    def scores(self) -> torch.Tensor:
        return self.token_level_rewards.sum(-1)

    def need(self, name: str, estimator: str) -> torch.Tensor:
        value = getattr(self, name)
        if value is None:
            raise ValueError(f"adv_estimator {estimator} needs {name}, which this batch does not carry")
        return value


Estimator = Callable[[Any, AdvantageInputs], tuple[torch.Tensor, torch.Tensor]]


def _grpo(algo: Any, x: AdvantageInputs) -> tuple[torch.Tensor, torch.Tensor]:
    return grpo_outcome_advantage(x.scores, x.group_index, x.response_mask, algo.norm_adv_by_std_in_grpo)


def _rloo(algo: Any, x: AdvantageInputs) -> tuple[torch.Tensor, torch.Tensor]:
    return rloo_outcome_advantage(x.scores, x.group_index, x.response_mask)


def _token_baseline(estimator: Callable[..., tuple[torch.Tensor, torch.Tensor]], x: AdvantageInputs,
                    name: str) -> tuple[torch.Tensor, torch.Tensor]:
    return estimator(x.token_level_rewards, x.response_mask, x.group_index, x.need("old_log_probs", name),
                     x.need("sum_pi_squared", name), x.rollout_is_weights)


ADVANTAGE_ESTIMATORS: dict[str, Estimator] = {
    "gae": lambda algo, x: gae_advantage(x.token_level_rewards, x.need("values", "gae"), x.response_mask,
                                         algo.gamma, algo.lam),
    "grpo": _grpo,
    "grpo_vectorized": _grpo,  # verl's second implementation of the same numbers
    "grpo_passk": lambda algo, x: grpo_passk_advantage(x.scores, x.group_index, x.response_mask,
                                                       algo.norm_adv_by_std_in_grpo),
    "rloo": _rloo,
    "rloo_vectorized": _rloo,
    "reinforce_plus_plus": lambda algo, x: reinforce_plus_plus_advantage(x.token_level_rewards, x.response_mask,
                                                                         algo.gamma),
    "reinforce_plus_plus_baseline": lambda algo, x: reinforce_plus_plus_baseline_advantage(
        x.scores, x.group_index, x.response_mask),
    "remax": lambda algo, x: remax_advantage(x.token_level_rewards, x.response_mask,
                                             x.need("reward_baselines", "remax")),
    "opo": lambda algo, x: opo_advantage(x.scores, x.group_index, x.response_mask),
    "gpg": lambda algo, x: gpg_advantage(x.scores, x.group_index, x.response_mask),
    "optimal_token_baseline": lambda algo, x: _token_baseline(optimal_token_baseline_advantage, x,
                                                              "optimal_token_baseline"),
    "tir_optimal_token_baseline": lambda algo, x: _token_baseline(tir_optimal_token_baseline_advantage, x,
                                                                  "tir_optimal_token_baseline"),
    "gdpo": lambda algo, x: gdpo_advantage(x.need("reward_components", "gdpo"), algo.gdpo_reward_weights,
                                           x.group_index, x.response_mask, algo.norm_adv_by_std_in_grpo),
}


@torch.no_grad()
def compute_advantage(algorithm: Any, inputs: AdvantageInputs) -> tuple[torch.Tensor, torch.Tensor]:
    """Dispatch on `algorithm.adv_estimator` (the `algorithm` config section); returns (advantages, returns)."""
    estimator = algorithm.adv_estimator
    if estimator not in ADVANTAGE_ESTIMATORS:
        raise ValueError(f"adv_estimator {estimator!r} is not one of: {', '.join(ADVANTAGE_ESTIMATORS)}")
    return ADVANTAGE_ESTIMATORS[estimator](algorithm, inputs)
