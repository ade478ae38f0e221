"""Losses on per-token tensors [B, T] with a response mask, and their aggregation modes (verl's names)."""

from __future__ import annotations

import torch

AGG_MODES = ("token-mean", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm")


def agg_loss(loss: torch.Tensor, mask: torch.Tensor, mode: str) -> torch.Tensor:
    if mode == "token-mean":
        return (loss * mask).sum() / mask.sum().clamp(min=1)
    if mode == "seq-mean-token-sum":
        return (loss * mask).sum(-1).mean()
    if mode == "seq-mean-token-mean":
        return ((loss * mask).sum(-1) / mask.sum(-1).clamp(min=1)).mean()
    if mode == "seq-mean-token-sum-norm":
        return (loss * mask).sum() / mask.shape[-1]
    raise ValueError(f"loss_agg_mode {mode!r} is not one of {', '.join(AGG_MODES)}")


def policy_loss(old_log_prob: torch.Tensor, log_prob: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
                clip_ratio_low: float, clip_ratio_high: float, clip_ratio_c: float = 3.0,
                loss_agg_mode: str = "token-mean") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """PPO's clipped surrogate with dual clipping for negative advantages.

    Returns (loss, clip fraction, approximate KL old->new, fraction clipped by the dual clip)."""
    log_ratio = (log_prob - old_log_prob).clamp(-20.0, 20.0)
    ratio = torch.exp(log_ratio)
    ppo_kl = (-log_ratio * mask).sum() / mask.sum().clamp(min=1)
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1 - clip_ratio_low, 1 + clip_ratio_high)
    loss_clipped = torch.maximum(unclipped, clipped)
    clipfrac = ((clipped > unclipped).float() * mask).sum() / mask.sum().clamp(min=1)
    dual = torch.minimum(-advantages * clip_ratio_c, loss_clipped)
    lower_clipfrac = (((loss_clipped > -advantages * clip_ratio_c) & (advantages < 0)).float() * mask).sum() \
        / mask.sum().clamp(min=1)
    loss = torch.where(advantages < 0, dual, loss_clipped)
    return agg_loss(loss, mask, loss_agg_mode), clipfrac, ppo_kl, lower_clipfrac


def kl_penalty(log_prob: torch.Tensor, ref_log_prob: torch.Tensor, kind: str) -> torch.Tensor:
    """Per-token KL estimates between the policy and the reference (Schulman's k1, k2, k3)."""
    delta = log_prob - ref_log_prob
    if kind in ("kl", "k1"):
        return delta
    if kind == "abs":
        return delta.abs()
    if kind in ("mse", "k2"):
        return 0.5 * delta.square()
    if kind in ("low_var_kl", "k3"):
        ratio = torch.exp((-delta).clamp(-20, 20))
        return (ratio + delta - 1).clamp(-10, 10)
    if kind == "full":
        raise ValueError("kl type `full` needs full-vocabulary distributions and is not supported")
    raise ValueError(f"unknown kl type {kind!r}: kl/k1, abs, mse/k2, low_var_kl/k3")


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy per position, -sum p log p, computed stably from logits."""
    log_z = torch.logsumexp(logits, dim=-1)
    probs = torch.softmax(logits, dim=-1)
    return log_z - (probs * logits).sum(-1)


def log_probs_from_logits(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log p(label) without materialising a second [.., vocab] tensor of log-probs."""
    picked = logits.gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


def value_loss(values: torch.Tensor, returns: torch.Tensor, old_values: torch.Tensor, mask: torch.Tensor,
               cliprange_value: float, loss_agg_mode: str = "token-mean") -> tuple[torch.Tensor, torch.Tensor]:
    """Clipped value loss: 0.5 x the larger of the clipped and unclipped squared errors."""
    clipped = old_values + (values - old_values).clamp(-cliprange_value, cliprange_value)
    unclipped_error, clipped_error = (values - returns).square(), (clipped - returns).square()
    loss = 0.5 * agg_loss(torch.maximum(unclipped_error, clipped_error), mask, loss_agg_mode)
    clipfrac = ((clipped_error > unclipped_error).float() * mask).sum() / mask.sum().clamp(min=1)
    return loss, clipfrac
