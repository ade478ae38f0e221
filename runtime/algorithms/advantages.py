"""Advantage estimators as pure functions on tensors, with verl's semantics (verl/trainer/ppo/core_algos.py).

Outcome estimators (GRPO, RLOO) take one score per response and a group id per response (the prompt it answers),
and broadcast the resulting scalar over the response tokens. Token estimators (GAE, REINFORCE++) take rewards as
[B, T] tensors: the outcome score on the last response token, minus any KL penalty, as the trainer places them.
Group statistics are computed with index_add over contiguous group ids rather than a Python loop per sample, so
the cost stays flat for large rollout batches; the numbers are those of verl's loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from rlc_runtime.algorithms.masked import masked_mean, masked_whiten

__all__ = ["compute_advantage", "gae_advantage", "grpo_outcome_advantage", "masked_mean", "masked_whiten",
           "reinforce_plus_plus_advantage", "rloo_outcome_advantage"]

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


@torch.no_grad()
def compute_advantage(algorithm: Any, token_level_rewards: torch.Tensor, response_mask: torch.Tensor,
                      group_index: GroupIndex, values: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Dispatch on `algorithm.adv_estimator` (the `algorithm` config section); returns (advantages, returns)."""
    estimator = algorithm.adv_estimator
    scores = token_level_rewards.sum(-1)
    if estimator == "grpo":
        return grpo_outcome_advantage(scores, group_index, response_mask, algorithm.norm_adv_by_std_in_grpo)
    if estimator == "rloo":
        return rloo_outcome_advantage(scores, group_index, response_mask)
    if estimator == "reinforce_plus_plus":
        return reinforce_plus_plus_advantage(token_level_rewards, response_mask, algorithm.gamma)
    if estimator == "gae":
        if values is None:
            raise ValueError("adv_estimator gae needs the critic's values")
        return gae_advantage(token_level_rewards, values, response_mask, algorithm.gamma, algorithm.lam)
    raise ValueError(f"adv_estimator {estimator!r} is not implemented (grpo, rloo, reinforce_plus_plus, gae are)")
