"""Advantage estimators: GRPO, RLOO and REINFORCE++ on outcome rewards, GAE with a critic.

Rewards arrive as token-level tensors [B, T] (the outcome score on the last response token, minus any KL penalty),
`mask` marks response tokens, and `index` holds each sample's prompt (its group), as in verl's core_algos.
"""

from __future__ import annotations

from typing import Any

import torch


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    total = (values * mask).sum() if dim is None else (values * mask).sum(dim)
    count = mask.sum() if dim is None else mask.sum(dim)
    return total / count.clamp(min=1)


def masked_whiten(values: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    mean = masked_mean(values, mask)
    var = masked_mean((values - mean) ** 2, mask)
    count = mask.sum()
    if count > 1:
        var = var * count / (count - 1)  # unbiased, as verl
    return (values - mean) * torch.rsqrt(var + eps)


def _groups(index: torch.Tensor) -> list[torch.Tensor]:
    return [torch.nonzero(index == uid).flatten() for uid in torch.unique(index)]


def grpo_outcome_advantage(token_rewards: torch.Tensor, mask: torch.Tensor, index: torch.Tensor,
                           norm_by_std: bool = True, eps: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """Score minus its group's mean, over the group's std when `norm_by_std` (a group of one: mean 0, std 1)."""
    scores = token_rewards.sum(-1)
    normalised = torch.zeros_like(scores)
    for rows in _groups(index):
        group = scores[rows]
        if len(rows) == 1:
            normalised[rows] = group
            continue
        centred = group - group.mean()
        normalised[rows] = centred / (group.std() + eps) if norm_by_std else centred
    advantages = normalised[:, None] * mask
    return advantages, advantages


def rloo_outcome_advantage(token_rewards: torch.Tensor, mask: torch.Tensor,
                           index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each score minus the mean of the other samples of its prompt (leave-one-out baseline)."""
    scores = token_rewards.sum(-1)
    out = scores.clone()
    for rows in _groups(index):
        n = len(rows)
        if n > 1:
            group = scores[rows]
            out[rows] = group * n / (n - 1) - group.mean() * n / (n - 1)
    advantages = out[:, None] * mask
    return advantages, advantages


def reinforce_plus_plus_advantage(token_rewards: torch.Tensor, mask: torch.Tensor,
                                  gamma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Discounted return-to-go per token, whitened over the batch."""
    returns = torch.zeros_like(token_rewards)
    running = torch.zeros(token_rewards.shape[0], dtype=token_rewards.dtype)
    for t in reversed(range(token_rewards.shape[1])):
        running = token_rewards[:, t] + gamma * running * mask[:, t]
        returns[:, t] = running
    advantages = masked_whiten(returns, mask) * mask
    return advantages, returns


def gae_advantage(token_rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float,
                  lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation; advantages whitened over the mask, returns = advantages + values."""
    length = token_rewards.shape[1]
    next_value = torch.zeros(token_rewards.shape[0], dtype=values.dtype)
    running = torch.zeros_like(next_value)
    reversed_advantages = []
    for t in reversed(range(length)):
        delta = token_rewards[:, t] + gamma * next_value - values[:, t]
        # Masked tokens (padding) neither add a TD error nor pass a value back: both carry over unchanged.
        running = (delta + gamma * lam * running) * mask[:, t] + (1 - mask[:, t]) * running
        next_value = values[:, t] * mask[:, t] + (1 - mask[:, t]) * next_value
        reversed_advantages.append(running)
    advantages = torch.stack(reversed_advantages[::-1], dim=1)
    returns = advantages + values
    return masked_whiten(advantages, mask) * mask, returns


def compute_advantage(algorithm: Any, token_rewards: torch.Tensor, mask: torch.Tensor, index: torch.Tensor,
                      values: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Dispatch on `algorithm.adv_estimator` (the `algorithm` config section)."""
    estimator = algorithm.adv_estimator
    if estimator == "grpo":
        return grpo_outcome_advantage(token_rewards, mask, index, algorithm.norm_adv_by_std_in_grpo)
    if estimator == "rloo":
        return rloo_outcome_advantage(token_rewards, mask, index)
    if estimator == "reinforce_plus_plus":
        return reinforce_plus_plus_advantage(token_rewards, mask, algorithm.gamma)
    if estimator == "gae":
        if values is None:
            raise ValueError("adv_estimator gae needs the critic's values")
        return gae_advantage(token_rewards, values, mask, algorithm.gamma, algorithm.lam)
    raise ValueError(f"adv_estimator {estimator} is not implemented")
