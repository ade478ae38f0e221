"""Every policy loss verl registers (`actor.policy_loss.loss_mode`), one registry, one call signature.

Each loss builds a per-token [B, T] loss matrix from the log-probs of the sampled tokens under the policy at rollout
(`old_log_prob`) and now (`log_prob`), multiplies it by the rollout-correction weights when given, and reduces it
with `agg_loss` under the actor's `loss_agg_mode` -- for every mode, including gspo, sapo and geo_mean, which verl
pins to seq-mean-token-mean (rlc's validation warns when the configured mode differs). GMPO's loss is one number
per sequence; every token of the sequence carries it, so seq-mean-token-mean is exactly the paper's mean over
sequences and token-mean weighs each sequence by its length.

`config` is the actor section: clip ratios at its top level (verl's `clip_ratio*`, `tau_pos`, `tau_neg`), the
mode's own parameters under `config.policy_loss` (`clip_cov_*`, `kl_cov_ratio`, `ppo_kl_coef`). Metrics are
detached scalars under verl's names.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from rlc_runtime.algorithms.losses import agg_loss
from rlc_runtime.algorithms.masked import masked_mean

Metrics = dict[str, torch.Tensor]
PolicyLoss = Callable[..., tuple[torch.Tensor, Metrics]]
POLICY_LOSSES: dict[str, PolicyLoss] = {}
BYPASS_MODE = "bypass_mode"  # composed of vanilla or REINFORCE and rollout correction, not a per-token loss
_LOG_RATIO_BOUND = 20.0  # exp(20) is finite in every dtype we train in; a token whose ratio exploded stays finite


def register(name: str) -> Callable[[PolicyLoss], PolicyLoss]:
    def add(fn: PolicyLoss) -> PolicyLoss:
        POLICY_LOSSES[name] = fn
        return fn
    return add


def compute_policy_loss(mode: str, old_log_prob: torch.Tensor, log_prob: torch.Tensor, advantages: torch.Tensor,
                        response_mask: torch.Tensor, loss_agg_mode: str, config: Any,
                        rollout_is_weights: torch.Tensor | None = None,
                        bypass: Any = None) -> tuple[torch.Tensor, Metrics]:
    """The loss `mode` names, aggregated under `loss_agg_mode`; returns (loss, detached verl-named metrics).

    `bypass` is `algorithm.rollout_correction` when its bypass_mode is on (old_log_prob is then the rollout's):
    loss_mode bypass_mode, and vanilla, which verl's bypass mode turns into it, run `bypass_mode_loss`."""
    if mode == BYPASS_MODE or (mode == "vanilla" and bypass is not None):
        if bypass is None:
            raise ValueError("loss_mode bypass_mode takes the old log-probs to be the rollout's: it needs "
                             "algorithm.rollout_correction.bypass_mode true")
        return bypass_mode_loss(old_log_prob, log_prob, advantages, response_mask, loss_agg_mode, config, bypass)
    if mode not in POLICY_LOSSES:
        raise ValueError(f"policy loss_mode {mode!r} is not one of: {', '.join(POLICY_LOSS_MODES)}")
    loss_mat, metrics = POLICY_LOSSES[mode](old_log_prob, log_prob, advantages, response_mask, config)
    if rollout_is_weights is not None:
        loss_mat = loss_mat * rollout_is_weights.detach()
    return agg_loss(loss_mat, response_mask, loss_agg_mode), {k: v.detach() for k, v in metrics.items()}


def bypass_mode_loss(rollout_log_prob: torch.Tensor, log_prob: torch.Tensor, advantages: torch.Tensor,
                     response_mask: torch.Tensor, loss_agg_mode: str, config: Any,
                     correction: Any) -> tuple[torch.Tensor, Metrics]:
    """verl's bypass-mode loss: two policies, the rollout's and the current one (no recomputed old policy).

    Rejection (`rollout_rs`) and importance weights (`rollout_is`) are measured between the current policy and the
    rollout, per micro-batch, on detached log-probs. `loss_type` ppo_clip: vanilla PPO against the rollout's
    log-probs on the surviving tokens, the weights only reported (the PPO ratio already is pi / pi_rollout).
    reinforce: -w A log p, the truncated weight w making the plain policy gradient off-policy correct."""
    from rlc_runtime.algorithms.rollout_correction import apply_rollout_correction

    weights, mask, metrics = apply_rollout_correction(correction, log_prob.detach(), rollout_log_prob,
                                                      response_mask)
    if correction.loss_type == "ppo_clip":
        loss, pg_metrics = compute_policy_loss("vanilla", rollout_log_prob, log_prob, advantages, mask,
                                               loss_agg_mode, config)
    elif correction.loss_type == "reinforce":
        loss_mat = -advantages * log_prob * (weights if weights is not None else 1.0)
        loss = agg_loss(loss_mat, mask, loss_agg_mode)
        pg_metrics = {"actor/ppo_kl": masked_mean(rollout_log_prob - log_prob.detach(), mask)}
    else:
        raise ValueError(f"rollout_correction.loss_type must be ppo_clip or reinforce, got {correction.loss_type!r}")
    return loss, pg_metrics | {k: torch.tensor(v) for k, v in metrics.items()}


def clip_bounds(config: Any) -> tuple[float, float]:
    """(clip_ratio_low, clip_ratio_high), each falling back to clip_ratio (DAPO's clip-higher sets them apart)."""
    low = config.clip_ratio_low if config.clip_ratio_low is not None else config.clip_ratio
    high = config.clip_ratio_high if config.clip_ratio_high is not None else config.clip_ratio
    return low, high


def _log_ratio(old_log_prob: torch.Tensor, log_prob: torch.Tensor) -> torch.Tensor:
    return (log_prob - old_log_prob).clamp(-_LOG_RATIO_BOUND, _LOG_RATIO_BOUND)


def _clipped_surrogate(ratio: torch.Tensor, advantages: torch.Tensor, low: float,
                       high: float) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's max(-A r, -A clip(r)) per token, and where the clipped term was the larger."""
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1 - low, 1 + high)
    return torch.maximum(unclipped, clipped), clipped > unclipped


def _fraction(flags: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return masked_mean(flags.float(), mask)


@register("vanilla")
def vanilla_loss(old_log_prob: torch.Tensor, log_prob: torch.Tensor, advantages: torch.Tensor,
                 mask: torch.Tensor, config: Any) -> tuple[torch.Tensor, Metrics]:
    """PPO's clipped surrogate (Schulman et al. 2017) with clip-higher bounds (DAPO, Yu et al. 2025); for negative
    advantages also capped at -A * clip_ratio_c (dual clip, Ye et al. 2020), so one exploded ratio cannot dominate."""
    if config.clip_ratio_c <= 1.0:
        raise ValueError(f"clip_ratio_c must be greater than 1 (the dual-clip bound on the ratio), "
                         f"got {config.clip_ratio_c}")
    log_ratio = _log_ratio(old_log_prob, log_prob)
    ppo_loss, was_clipped = _clipped_surrogate(torch.exp(log_ratio), advantages, *clip_bounds(config))
    dual_bound = -advantages * config.clip_ratio_c
    negative = advantages < 0
    loss = torch.where(negative, torch.minimum(ppo_loss, dual_bound), ppo_loss)
    return loss, {"actor/pg_clipfrac": _fraction(was_clipped, mask), "actor/ppo_kl": masked_mean(-log_ratio, mask),
                  "actor/pg_clipfrac_lower": _fraction((ppo_loss > dual_bound) & negative, mask)}


@register("gspo")
def gspo_loss(old_log_prob: torch.Tensor, log_prob: torch.Tensor, advantages: torch.Tensor,
              mask: torch.Tensor, config: Any) -> tuple[torch.Tensor, Metrics]:
    """GSPO (Zheng et al. 2025): one ratio per sequence, the geometric mean of its token ratios, clipped.

    Each token carries the sequence ratio's value with its own log-prob's gradient: log s_it = sg(log s_i) +
    log p_t - sg(log p_t), so the gradient of a sequence's loss is s_i * A_i * mean_t grad log p_t."""
    log_ratio = log_prob - old_log_prob
    seq_log_ratio = (log_ratio * mask).sum(-1) / mask.sum(-1).clamp(min=1)
    token_log_ratio = log_prob - log_prob.detach() + seq_log_ratio.detach()[:, None]
    ratio = torch.exp(token_log_ratio.clamp(max=10.0))  # verl's bound: a sequence ratio of e^10 is already absurd
    loss, was_clipped = _clipped_surrogate(ratio, advantages, *clip_bounds(config))
    return loss, {"actor/pg_clipfrac": _fraction(was_clipped, mask), "actor/ppo_kl": masked_mean(-log_ratio, mask),
                  "actor/pg_clipfrac_lower": torch.zeros(())}


@register("sapo")
def sapo_loss(old_log_prob: torch.Tensor, log_prob: torch.Tensor, advantages: torch.Tensor,
              mask: torch.Tensor, config: Any) -> tuple[torch.Tensor, Metrics]:
    """SAPO (Gao et al. 2025): a smooth gate instead of a hard clip, -A * (4/tau) * sigmoid(tau (r - 1)).

    At r = 1 the gate's slope is 1 (PPO's gradient); far from 1 it fades. tau_pos applies where A > 0, tau_neg
    elsewhere (a larger tau_neg damps negative updates faster, which the paper finds more stable)."""
    log_ratio = _log_ratio(old_log_prob, log_prob)
    tau = torch.where(advantages > 0, config.tau_pos, config.tau_neg).to(advantages.dtype)
    gate = torch.sigmoid(tau * (torch.exp(log_ratio) - 1)) * (4 / tau)
    zero = torch.zeros(())
    return -gate * advantages, {"actor/pg_clipfrac": zero, "actor/ppo_kl": masked_mean(-log_ratio, mask),
                                "actor/pg_clipfrac_lower": zero}


@register("gpg")
def gpg_loss(old_log_prob: torch.Tensor, log_prob: torch.Tensor, advantages: torch.Tensor,
             mask: torch.Tensor, config: Any) -> tuple[torch.Tensor, Metrics]:
    """GPG (Chu et al. 2025): the plain policy gradient -A log p, with no ratio and no clipping."""
    return -advantages * log_prob, {}


@register("cispo")
def cispo_loss(old_log_prob: torch.Tensor, log_prob: torch.Tensor, advantages: torch.Tensor,
               mask: torch.Tensor, config: Any) -> tuple[torch.Tensor, Metrics]:
    """CISPO (MiniMax-M1, 2025): -sg(clip(r)) * A * log p. The clipped ratio only weighs the token; every token
    keeps a gradient, unlike PPO, which drops clipped tokens' gradients altogether."""
    log_ratio = _log_ratio(old_log_prob, log_prob)
    ratio = torch.exp(log_ratio)
    low, high = clip_bounds(config)
    weight = ratio.clamp(1 - low, 1 + high).detach()
    return -weight * advantages * log_prob, {
        "actor/pg_clipfrac": _fraction(weight != ratio.detach(), mask),
        "actor/ppo_kl": masked_mean(-log_ratio, mask), "actor/pg_clipfrac_lower": torch.zeros(())}


def _centred_covariance(advantages: torch.Tensor, log_prob: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per token, (A - mean A)(log p - mean log p) over the micro-batch's response tokens: the token's share of
    the covariance that Cui et al. (2025) show drives entropy collapse."""
    log_prob = log_prob.detach()
    return (advantages - masked_mean(advantages, mask)) * (log_prob - masked_mean(log_prob, mask))


@register("clip_cov")
def clip_cov_loss(old_log_prob: torch.Tensor, log_prob: torch.Tensor, advantages: torch.Tensor,
                  mask: torch.Tensor, config: Any) -> tuple[torch.Tensor, Metrics]:
    """Clip-Cov (Cui et al. 2025): PPO's clipped loss, with the gradient of a few tokens cut.

    Candidates are unclipped response tokens whose covariance lies strictly between clip_cov_lb and clip_cov_ub;
    max(1, int(clip_cov_ratio x tokens)) of them, drawn at random, lose their loss term altogether."""
    params = config.policy_loss
    log_ratio = log_prob - old_log_prob
    ppo_loss, was_clipped = _clipped_surrogate(torch.exp(log_ratio), advantages, *clip_bounds(config))
    covariance = _centred_covariance(advantages, log_prob, mask)
    candidates = (mask > 0) & ~was_clipped & (covariance > params.clip_cov_lb) & (covariance < params.clip_cov_ub)
    positions = torch.nonzero(candidates)
    budget = max(int(params.clip_cov_ratio * float(mask.sum())), 1)
    chosen = positions[torch.randperm(len(positions), device=positions.device)[:budget]]
    keep = torch.ones_like(advantages)
    keep[chosen[:, 0], chosen[:, 1]] = 0
    return ppo_loss * keep, {"actor/pg_clipfrac": _fraction(keep == 0, mask),
                             "actor/ppo_kl": masked_mean(-log_ratio, mask)}


@register("kl_cov")
def kl_cov_loss(old_log_prob: torch.Tensor, log_prob: torch.Tensor, advantages: torch.Tensor,
                mask: torch.Tensor, config: Any) -> tuple[torch.Tensor, Metrics]:
    """KL-Cov (Cui et al. 2025): the unclipped surrogate -A r, plus ppo_kl_coef x |log r| on the
    max(1, int(kl_cov_ratio x tokens)) response tokens of largest covariance."""
    params = config.policy_loss
    log_ratio = log_prob - old_log_prob
    loss = -advantages * torch.exp(log_ratio)
    covariance = _centred_covariance(advantages, log_prob, mask).masked_fill(mask <= 0, -torch.inf)
    tokens = int(mask.sum())
    if tokens:
        top = torch.topk(covariance.flatten(), max(1, int(tokens * params.kl_cov_ratio))).indices
        penalty = torch.zeros(covariance.numel(), dtype=loss.dtype, device=loss.device).index_fill_(0, top, 1)
        penalty = penalty.view_as(loss)
        loss = loss + penalty * params.ppo_kl_coef * log_ratio.abs()
    return loss, {"actor/ppo_kl": masked_mean(log_ratio.abs(), mask)}


@register("geo_mean")
def geo_mean_loss(old_log_prob: torch.Tensor, log_prob: torch.Tensor, advantages: torch.Tensor,
                  mask: torch.Tensor, config: Any) -> tuple[torch.Tensor, Metrics]:
    """GMPO (Zhao et al. 2025): -A_i x the geometric mean of the token ratios, each clipped in log space to
    [-clip_ratio_low, clip_ratio_high] on the side that would make the objective larger (PPO's pessimism per token).

    Every token of a sequence carries the sequence's loss (see the module docstring)."""
    low, high = clip_bounds(config)
    log_ratio = log_prob - old_log_prob
    sign = torch.sign(advantages)
    bounded = log_ratio.clamp(-low, high)
    pessimistic = sign * torch.minimum(sign * log_ratio, sign * bounded)
    length = mask.sum(-1).clamp(min=1)
    seq_ratio = torch.exp((pessimistic * mask).sum(-1) / length)
    seq_advantage = (advantages * mask).sum(-1) / length
    loss = (-seq_advantage * seq_ratio)[:, None].expand_as(log_prob)
    was_clipped = log_ratio != bounded
    return loss, {"actor/pg_clipfrac": _fraction(was_clipped & (advantages > 0), mask),
                  "actor/ppo_kl": masked_mean(-log_ratio, mask),
                  "actor/pg_clipfrac_lower": _fraction(was_clipped & (advantages < 0), mask)}


def _probability_ratio(old_log_prob: torch.Tensor, log_prob: torch.Tensor, config: Any) -> tuple[torch.Tensor, ...]:
    """(log ratio, its truncated ratio min(r, clip_ratio_c) without a gradient, pi, pi_old) for the DPPO losses."""
    log_ratio = _log_ratio(old_log_prob, log_prob)
    truncated = torch.exp(log_ratio).clamp(max=config.clip_ratio_c).detach()
    return log_ratio, truncated, torch.exp(log_prob).detach(), torch.exp(old_log_prob)


def _dppo(log_prob: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, log_ratio: torch.Tensor,
          truncated: torch.Tensor, trusted: torch.Tensor, config: Any) -> tuple[torch.Tensor, Metrics]:
    """DPPO's loss: -A sg(min(r, c)) log p on the tokens whose update stays inside the trust region, 0 elsewhere.
    pg_clipfrac: the share of tokens outside; pg_clipfrac_lower: the share inside whose ratio was truncated."""
    loss = -advantages * truncated * log_prob * trusted
    exploded = torch.exp(log_ratio.detach()) > config.clip_ratio_c
    return loss, {"actor/pg_clipfrac": _fraction(~trusted, mask), "actor/ppo_kl": masked_mean(-log_ratio, mask),
                  "actor/pg_clipfrac_lower": _fraction(exploded & trusted, mask)}


@register("dppo_tv")
def dppo_tv_loss(old_log_prob: torch.Tensor, log_prob: torch.Tensor, advantages: torch.Tensor,
                 mask: torch.Tensor, config: Any) -> tuple[torch.Tensor, Metrics]:
    """DPPO-Binary-TV (Divergence PPO, arXiv 2602.04879): the trust region is on the sampled token's probability,
    not its ratio. A token is dropped when a positive advantage already raised pi by more than clip_ratio_high
    (pi - pi_old > high), or a non-positive one lowered it by more than clip_ratio_low; the clip ratios are total
    variation bounds here. The ratio weighting the rest is truncated at clip_ratio_c (TIS, not dual clip)."""
    low, high = clip_bounds(config)
    log_ratio, truncated, prob, old_prob = _probability_ratio(old_log_prob, log_prob, config)
    change = prob - old_prob
    trusted = torch.where(advantages > 0, change <= high, change >= -low)
    return _dppo(log_prob, advantages, mask, log_ratio, truncated, trusted, config)


@register("dppo_kl")
def dppo_kl_loss(old_log_prob: torch.Tensor, log_prob: torch.Tensor, advantages: torch.Tensor,
                 mask: torch.Tensor, config: Any) -> tuple[torch.Tensor, Metrics]:
    """DPPO-Binary-KL: as dppo_tv with the KL between the Bernoulli distributions (sampled token or not) of the
    old and current policy, KL = p_o log(p_o/p) + (1-p_o) log((1-p_o)/(1-p)), bounded by clip_ratio_high
    (low) only in the direction the advantage pushes: a move against it is never dropped."""
    low, high = clip_bounds(config)
    log_ratio, truncated, prob, old_prob = _probability_ratio(old_log_prob, log_prob, config)
    binary_kl = old_prob * (old_log_prob - log_prob.detach()) + (1 - old_prob) * torch.log(
        (1 - old_prob + 1e-8) / (1 - prob + 1e-8))
    trusted = torch.where(advantages > 0, (binary_kl <= high) | (prob <= old_prob),
                          (binary_kl <= low) | (prob >= old_prob))
    return _dppo(log_prob, advantages, mask, log_ratio, truncated, trusted, config)


@register("dro")
def dro_loss(old_log_prob: torch.Tensor, log_prob: torch.Tensor, advantages: torch.Tensor,
             mask: torch.Tensor, config: Any) -> tuple[torch.Tensor, Metrics]:
    """DRO (Direct Reward Optimization) as verl 0.9.1 registers it, per token:
    -(A log p - beta/2 (log p - log p_old)^2), the quadratic term a soft trust region around the old policy."""
    beta = config.policy_loss.dro_beta
    if beta is None or beta <= 0:
        raise ValueError(f"loss_mode dro needs policy_loss.dro_beta > 0, got {beta}")
    log_ratio = log_prob - old_log_prob
    return -(advantages * log_prob - 0.5 * beta * log_ratio.square()), {
        "actor/ppo_kl": masked_mean(-log_ratio, mask)}


POLICY_LOSS_MODES = (*POLICY_LOSSES, BYPASS_MODE)
"""Every loss_mode rlc runs: the per-token losses and the bypass-mode composition."""
