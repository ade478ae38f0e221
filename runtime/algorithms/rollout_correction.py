"""Rollout correction (verl's `algorithm.rollout_correction`): the rollout engine samples with its own numerics
(vLLM kernels, another precision), so the tokens come from pi_rollout, not from the trainer's pi_old. Importance
weights pi_old / pi_rollout, truncated above (TIS), reweight the policy loss; rejection sampling masks tokens or
whole sequences whose divergence is out of bounds.

Decoupled mode (three policies): computed once per step on the controller from the recomputed `old_log_probs` and
`rollout_log_probs`. Bypass mode (`bypass_mode`, two policies): no old-log-prob pass; the same functions run inside
the loss, per micro-batch, between the current policy and the rollout's (`policy_losses.bypass_mode_loss`). Log
ratios are clamped to +-20 before exp so no weight is inf. Metrics carry verl's `rollout_corr/` names.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from rlc_runtime.algorithms.masked import masked_mean, masked_sum

SAFETY_BOUND = 20.0
RS_OPTIONS = ("token_k1", "token_k2", "token_k3", "seq_sum_k1", "seq_sum_k2", "seq_sum_k3", "seq_mean_k1",
              "seq_mean_k2", "seq_mean_k3", "seq_max_k2", "seq_max_k3")


def importance_weights(log_ratio: torch.Tensor, mask: torch.Tensor, level: str, threshold: float,
                       batch_normalize: bool) -> tuple[torch.Tensor, dict[str, float]]:
    """Truncated importance weights, [B, T], 0 on padding. `log_ratio` = log pi_old - log pi_rollout.

    token: exp(log_ratio) per token; sequence: exp(sum of the sequence's log ratios) on each of its tokens. Both
    are capped at `threshold`, then optionally divided by their mean (over tokens, or over sequences)."""
    if level == "token":
        weights = torch.exp(log_ratio.clamp(-SAFETY_BOUND, SAFETY_BOUND))
    elif level == "sequence":
        seq = masked_sum(log_ratio, mask, dim=-1).clamp(-SAFETY_BOUND, SAFETY_BOUND)
        weights = torch.exp(seq)[:, None].expand_as(log_ratio)
    else:
        raise ValueError(f"rollout_is must be token or sequence, got {level!r}")
    weights = weights * mask
    valid = mask.bool()
    metrics = {"rollout_is_mean": masked_mean(weights, mask).item(),
               "rollout_is_max": weights[valid].max().item() if valid.any() else 0.0,
               "rollout_is_min": weights[valid].min().item() if valid.any() else 0.0,
               "rollout_is_ratio_fraction_high": masked_mean((weights > threshold).float(), mask).item()}
    weights = weights.clamp(max=threshold)
    # Effective sample size of the normalised truncated weights: 1 / E[w^2] with E[w] = 1.
    mean = masked_mean(weights, mask)
    metrics["rollout_is_eff_sample_size"] = (1 / masked_mean((weights / mean.clamp(min=1e-8)) ** 2, mask)
                                             .clamp(min=1e-8)).item()
    if batch_normalize:
        if level == "sequence":
            has_tokens = (mask.sum(-1) > 0).float()
            mean = masked_mean(masked_mean(weights, mask, dim=-1), has_tokens)
        if mean > 1e-8:
            weights = weights / mean
        metrics["rollout_is_batch_norm_factor"] = mean.item() if mean > 1e-8 else 1.0
    return weights.detach(), metrics


def parse_thresholds(options: list[str], spec: str | float | None) -> dict[str, tuple[float | None, float]]:
    """verl's threshold spec: one value for all options or one per option (comma-separated); a k1 option takes
    `lower_upper` or just `upper` (then lower = 1 / upper), the others an upper bound only."""
    if spec is None:
        raise ValueError("rollout_correction.rollout_rs_threshold must be set when rollout_rs is")
    parts = [str(spec)] if isinstance(spec, int | float) else [p.strip() for p in spec.split(",") if p.strip()]
    if len(parts) not in (1, len(options)):
        raise ValueError(f"rollout_rs_threshold has {len(parts)} values for {len(options)} rollout_rs options")
    parts = parts * len(options) if len(parts) == 1 else parts
    bounds: dict[str, tuple[float | None, float]] = {}
    for option, part in zip(options, parts, strict=True):
        if option.endswith("k1"):
            lower, _, upper = part.rpartition("_") if "_" in part else ("", "", part)
            upper_value = float(upper)
            bounds[option] = (float(lower) if lower else 1 / upper_value, upper_value)
        elif "_" in part:
            raise ValueError(f"rollout_rs option {option} takes one upper bound, not {part!r}")
        else:
            bounds[option] = (None, float(part))
        if any(b is not None and b <= 0 for b in bounds[option]):
            raise ValueError(f"rollout_rs_threshold for {option} must be positive, got {part!r}")
        lower_bound, upper_bound = bounds[option]
        if lower_bound is not None and lower_bound > upper_bound:
            raise ValueError(f"rollout_rs_threshold for {option} keeps no token: lower bound {lower_bound:g} is "
                             f"above upper bound {upper_bound:g} (a single k1 value is the upper bound, > 1)")
    return bounds


def rs_options(rollout_rs: str) -> list[str]:
    options = list(dict.fromkeys(o.strip() for o in rollout_rs.split(",") if o.strip()))
    unknown = [o for o in options if o not in RS_OPTIONS]
    if unknown or not options:
        raise ValueError(f"rollout_rs {rollout_rs!r}: each option must be one of {', '.join(RS_OPTIONS)}")
    return options


def _keep(option: str, log_ratio: torch.Tensor, mask: torch.Tensor, lower: float | None,
          upper: float) -> torch.Tensor:
    """Per token, whether `option`'s divergence is within bounds; sequence options decide for the whole row."""
    k1 = -log_ratio  # verl's k1 here: log pi_rollout - log pi_old, compared with log(lower) .. log(upper)
    stat = {"k1": k1, "k2": 0.5 * log_ratio ** 2, "k3": torch.exp(log_ratio) - 1 - log_ratio}[option[-2:]]
    scope = option.rsplit("_", 1)[0]
    if scope != "token":
        if scope == "seq_sum":
            stat = masked_sum(stat, mask, dim=-1)
        elif scope == "seq_mean":
            stat = masked_mean(stat, mask, dim=-1)
        else:  # seq_max
            stat = stat.masked_fill(~mask.bool(), -torch.inf).max(-1).values.clamp(min=0)
        stat = stat[:, None].expand_as(log_ratio)
    if option.endswith("k1"):
        return (stat >= math.log(lower)) & (stat <= math.log(upper))
    return stat <= upper


def rejection_mask(log_ratio: torch.Tensor, mask: torch.Tensor, rollout_rs: str,
                   threshold: str | float | None) -> tuple[torch.Tensor, dict[str, float]]:
    """The response mask with rejected tokens (or whole rejected sequences) set to 0, and the fractions rejected."""
    options = rs_options(rollout_rs)
    bounds = parse_thresholds(options, threshold)
    log_ratio = log_ratio.clamp(-SAFETY_BOUND, SAFETY_BOUND)
    keep = torch.ones_like(mask, dtype=torch.bool)
    metrics: dict[str, float] = {}
    for option in options:
        kept = _keep(option, log_ratio, mask, *bounds[option])
        metrics[f"rollout_rs_{option}_masked_fraction"] = masked_mean((~kept).float(), mask).item()
        keep &= kept
    new_mask = mask * keep
    metrics["rollout_rs_masked_fraction"] = masked_mean((~keep).float(), mask).item()
    metrics["rollout_rs_seq_masked_fraction"] = ((~keep & mask.bool()).any(-1)).float().mean().item()
    return new_mask.to(mask.dtype), metrics


def mismatch_metrics(old_log_probs: torch.Tensor, rollout_log_probs: torch.Tensor,
                     mask: torch.Tensor) -> dict[str, float]:
    """How far the rollout engine's distribution is from the trainer's, as verl reports it."""
    log_ratio = old_log_probs - rollout_log_probs
    train_nll = -masked_mean(old_log_probs, mask, dim=-1)
    rollout_nll = -masked_mean(rollout_log_probs, mask, dim=-1)
    rho = torch.exp(log_ratio.clamp(-SAFETY_BOUND, SAFETY_BOUND))
    seq_log_ratio = masked_sum(log_ratio, mask, dim=-1).clamp(-SAFETY_BOUND, SAFETY_BOUND)
    return {"kl": masked_mean(-log_ratio, mask).item(), "k3_kl": masked_mean(rho - 1 - log_ratio, mask).item(),
            "training_ppl": train_nll.exp().mean().item(), "rollout_ppl": rollout_nll.exp().mean().item(),
            "log_ppl_diff": (train_nll - rollout_nll).mean().item(),
            "chi2_token": (masked_mean(rho ** 2, mask) - 1).item(),
            "chi2_seq": (torch.exp(2 * seq_log_ratio).mean() - 1).item()}


def apply_rollout_correction(cfg: Any, old_log_probs: torch.Tensor, rollout_log_probs: torch.Tensor,
                             mask: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor, dict[str, float]]:
    """`cfg` is `algorithm.rollout_correction`. Returns (IS weights or None, response mask after rejection,
    metrics under rollout_corr/). Weights are computed on the mask that survives rejection."""
    log_ratio = old_log_probs - rollout_log_probs
    metrics = mismatch_metrics(old_log_probs, rollout_log_probs, mask)
    if cfg.rollout_rs:
        mask, rs_metrics = rejection_mask(log_ratio, mask, cfg.rollout_rs, cfg.rollout_rs_threshold)
        metrics |= rs_metrics
    weights = None
    if cfg.rollout_is:
        weights, is_metrics = importance_weights(log_ratio, mask, cfg.rollout_is, cfg.rollout_is_threshold,
                                                 cfg.rollout_is_batch_normalize)
        metrics |= is_metrics
    return weights, mask, {f"rollout_corr/{k}": v for k, v in metrics.items()}
