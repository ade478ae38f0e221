"""Losses on per-token [B, T] tensors with a response mask, in verl's semantics and under verl's names.

The policy loss is PPO's clipped surrogate with dual clipping (Ye et al. 2020), the value loss PPO's clipped
squared error, the KL estimators Schulman's k1/k2/k3; aggregation follows verl's `loss_agg_mode`s. Rows that are
all padding are left out of the per-sequence means (as verl does now), so a micro-batch of padding gives 0, not NaN.
Metrics returned beside a loss (clip fractions, approximate KL) are detached: they are for logging only.
"""

from __future__ import annotations

import torch

from rlc_runtime.algorithms.masked import masked_mean, masked_sum

AGG_MODES = ("token-mean", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm")
KL_KINDS = ("kl", "k1", "abs", "mse", "k2", "low_var_kl", "k3", "kl+", "k1+", "abs+", "low_var_kl+", "k3+")


def agg_loss(loss_mat: torch.Tensor, mask: torch.Tensor, mode: str) -> torch.Tensor:
    """Reduce a [B, T] loss to a scalar.

    token-mean: mean over all response tokens of the batch. seq-mean-token-sum: each sequence's token sum,
    averaged over sequences. seq-mean-token-mean: each sequence's token mean, averaged over sequences.
    seq-mean-token-sum-norm: the token sum of the batch over T, a constant (Dr. GRPO's length-unbiased form).
    """
    if mode == "token-mean":
        return masked_mean(loss_mat, mask)
    has_tokens = (mask.sum(-1) > 0).to(loss_mat.dtype)
    if mode == "seq-mean-token-sum":
        return masked_mean(masked_sum(loss_mat, mask, dim=-1), has_tokens)
    if mode == "seq-mean-token-mean":
        return masked_mean(masked_mean(loss_mat, mask, dim=-1), has_tokens)
    if mode == "seq-mean-token-sum-norm":
        return masked_sum(loss_mat, mask) / mask.shape[-1]
    raise ValueError(f"loss_agg_mode {mode!r} is not one of: {', '.join(AGG_MODES)}")


def policy_loss(old_log_prob: torch.Tensor, log_prob: torch.Tensor, advantages: torch.Tensor,
                response_mask: torch.Tensor, clip_ratio_low: float, clip_ratio_high: float, clip_ratio_c: float = 3.0,
                loss_agg_mode: str = "token-mean") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """PPO's clipped surrogate; for negative advantages the loss is also capped at -A * clip_ratio_c (dual clip),
    so one token whose ratio exploded cannot dominate the batch.

    Returns (pg_loss, pg_clipfrac, ppo_kl, pg_clipfrac_lower): the loss, the fraction of tokens where the ratio
    clip was active, the approximate KL(old || new) = mean(old - new), and the fraction capped by the dual clip.
    """
    if clip_ratio_c <= 1.0:
        raise ValueError(f"clip_ratio_c must be greater than 1 (the dual-clip bound on the ratio), got {clip_ratio_c}")
    log_ratio = (log_prob - old_log_prob).clamp(-20.0, 20.0)  # exp stays finite whatever the policy did
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1 - clip_ratio_low, 1 + clip_ratio_high)
    ppo_loss = torch.maximum(unclipped, clipped)
    dual_bound = -advantages * clip_ratio_c
    loss = torch.where(advantages < 0, torch.minimum(ppo_loss, dual_bound), ppo_loss)
    with torch.no_grad():
        clipfrac = masked_mean((clipped > unclipped).to(loss.dtype), response_mask)
        lower_clipfrac = masked_mean(((ppo_loss > dual_bound) & (advantages < 0)).to(loss.dtype), response_mask)
        ppo_kl = masked_mean(-log_ratio, response_mask)
    return agg_loss(loss, response_mask, loss_agg_mode), clipfrac, ppo_kl, lower_clipfrac


def kl_penalty(log_prob: torch.Tensor, ref_log_prob: torch.Tensor, kind: str) -> torch.Tensor:
    """Per-token estimate of KL(policy || reference) from the sampled tokens' log-probs (Schulman, 2020).

    k1 (`kl`) is log p - log q; `abs` its absolute value; k2 (`mse`) half its square; k3 (`low_var_kl`)
    q/p - log(q/p) - 1, unbiased and never negative, clamped to [-10, 10] as verl does. A `+` suffix (`k3+`)
    keeps that value but takes k2's gradient (straight through): k2's expected gradient is the KL's gradient,
    while k1's and k3's are not (verl's intent; its own code raises on the suffix).
    """
    if kind.endswith("+") and kind[:-1] in KL_KINDS:
        value = kl_penalty(log_prob, ref_log_prob, kind[:-1])
        surrogate = 0.5 * (log_prob - ref_log_prob).square()
        return surrogate - surrogate.detach() + value.detach()
    delta = log_prob - ref_log_prob
    if kind in ("kl", "k1"):
        return delta
    if kind == "abs":
        return delta.abs()
    if kind in ("mse", "k2"):
        return 0.5 * delta.square()
    if kind in ("low_var_kl", "k3"):
        log_ratio = (-delta).clamp(-20, 20)  # log(q/p)
        return (torch.exp(log_ratio) - log_ratio - 1).clamp(-10, 10)
    if kind == "full":
        raise ValueError("kl type 'full' needs both models' whole-vocabulary distributions and is not supported; "
                         f"use one of: {', '.join(KL_KINDS)}")
    raise ValueError(f"unknown kl type {kind!r}; use one of: {', '.join(KL_KINDS)}")


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of softmax(logits) per position: logsumexp(z) - sum(p * z), which never takes log of a tiny p."""
    probs = torch.softmax(logits, dim=-1)
    return torch.logsumexp(logits, dim=-1) - (probs * logits).sum(-1)


def log_probs_from_logits(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[label] without keeping a [..., vocab] tensor of log-probs.

    In float32/64 it is the picked logit minus logsumexp, whose backward needs only the logits themselves.
    In half precision logsumexp loses too many digits for a probability ratio, so each row is done in float32
    on its own (verl's choice of algorithm, with the upcast added), bounding the extra memory to one row.
    """
    if logits.dtype in (torch.float32, torch.float64):
        picked = logits.gather(-1, labels.unsqueeze(-1)).squeeze(-1)
        return picked - torch.logsumexp(logits, dim=-1)
    rows = [torch.log_softmax(row.float(), dim=-1).gather(-1, label.unsqueeze(-1)).squeeze(-1)
            for row, label in zip(logits, labels, strict=True)]
    return torch.stack(rows)


@torch.no_grad()
def sum_pi_squared_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """sum_v softmax(logits)_v^2 per position, = exp(logsumexp(2 z) - 2 logsumexp(z)), in float32.

    One row at a time, so the extra memory is one row's [R, vocab] float32 temporaries rather than the whole
    micro-batch's softmax; no graph (the optimal token baseline reads it once, from the old policy)."""
    rows = [torch.exp(torch.logsumexp(2 * row.float(), dim=-1) - 2 * torch.logsumexp(row.float(), dim=-1))
            for row in logits]
    return torch.stack(rows) if rows else logits.new_zeros(logits.shape[:-1], dtype=torch.float32)


def value_loss(vpreds: torch.Tensor, returns: torch.Tensor, values: torch.Tensor, response_mask: torch.Tensor,
               cliprange_value: float, loss_agg_mode: str = "token-mean") -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's clipped value loss: 0.5 x the larger of (vpred - R)^2 and (clipped vpred - R)^2, where the clipped
    prediction stays within cliprange_value of the value at rollout time. Returns (vf_loss, vf_clipfrac)."""
    clipped = values + (vpreds - values).clamp(-cliprange_value, cliprange_value)
    unclipped_error, clipped_error = (vpreds - returns).square(), (clipped - returns).square()
    loss = 0.5 * agg_loss(torch.maximum(unclipped_error, clipped_error), response_mask, loss_agg_mode)
    with torch.no_grad():
        clipfrac = masked_mean((clipped_error > unclipped_error).to(loss.dtype), response_mask)
    return loss, clipfrac
