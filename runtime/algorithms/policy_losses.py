"""Policy losses by verl's `policy_loss.loss_mode` name, behind verl's `compute_policy_loss` signature.

The shared update (`rlc_runtime.engines.update`) calls exactly this function, so adding a loss never touches an
engine. Only `vanilla` (PPO's clipped surrogate with dual clipping, `losses.policy_loss`) lives here; the other
modes are registered by name beside it.
"""

from __future__ import annotations

from typing import Any

import torch

from rlc_runtime.algorithms.losses import policy_loss


def compute_policy_loss(mode: str, old_log_prob: torch.Tensor, log_prob: torch.Tensor, advantages: torch.Tensor,
                        response_mask: torch.Tensor, loss_agg_mode: str, config: Any,
                        rollout_is_weights: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The aggregated loss and verl's detached metrics (actor/pg_clipfrac, actor/ppo_kl, actor/pg_clipfrac_lower).
    `config` is the actor section (clip ratios)."""
    if mode != "vanilla":
        raise ValueError(f"policy loss mode {mode!r} is not implemented; implemented: vanilla")
    if rollout_is_weights is not None:
        raise ValueError("rollout importance-sampling weights are not implemented for the vanilla policy loss")
    loss, clipfrac, ppo_kl, lower = policy_loss(old_log_prob, log_prob, advantages, response_mask,
                                                config.clip_ratio_low, config.clip_ratio_high, config.clip_ratio_c,
                                                loss_agg_mode)
    return loss, {"actor/pg_clipfrac": clipfrac, "actor/ppo_kl": ppo_kl, "actor/pg_clipfrac_lower": lower}
