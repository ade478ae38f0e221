"""Per-step metrics under verl's names, so that dashboards and habits built on verl carry over.

Pure functions of the step's batch and timings (verl's `metric_utils.compute_data_metrics`,
`compute_timing_metrics`, `compute_throughput_metrics`); the controller merges their dicts with what the workers
return. Means over response tokens use the response mask, never the padding.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from rlc_runtime.batch import TokenBatch


@contextmanager
def timed(name: str, timings: dict[str, float]) -> Iterator[None]:
    """Add the wall time of the block to `timings[name]` (added, so a phase may run in pieces)."""
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[name] = timings.get(name, 0.0) + time.perf_counter() - start


def mean_metrics(dicts: list[dict[str, float]]) -> dict[str, float]:
    """Average each key over the dicts that have it (ranks, micro-batches, PPO epochs)."""
    values: dict[str, list[float]] = defaultdict(list)
    for d in dicts:
        for key, value in d.items():
            values[key].append(float(value))
    return {key: sum(v) / len(v) for key, v in values.items()}


def _stats(prefix: str, x: torch.Tensor) -> dict[str, float]:
    x = x.float()
    if x.numel() == 0:
        return {}
    return {f"{prefix}/mean": x.mean().item(), f"{prefix}/max": x.max().item(), f"{prefix}/min": x.min().item()}


def data_metrics(batch: TokenBatch, scores: torch.Tensor, max_response_length: int, max_prompt_length: int,
                 use_critic: bool) -> dict[str, float]:
    """Scores, rewards, advantages, returns, values and lengths of one step's batch ([B] scores per sample)."""
    mask = batch.response_mask.bool()
    response_length = batch.response_mask.float().sum(-1)
    prompt_length = batch.attention_mask[:, : batch.prompt_length].float().sum(-1)
    metrics = _stats("critic/score", scores)
    if batch.token_level_rewards is not None:
        metrics |= _stats("critic/rewards", batch.token_level_rewards.sum(-1))
    if batch.advantages is not None:
        metrics |= _stats("critic/advantages", batch.advantages[mask])
    if batch.returns is not None:
        metrics |= _stats("critic/returns", batch.returns[mask])
    if use_critic and batch.values is not None and batch.returns is not None:
        values, returns = batch.values[mask], batch.returns[mask]
        metrics |= _stats("critic/values", values)
        metrics["critic/vf_explained_var"] = (1 - (returns - values).var() / (returns.var() + 1e-5)).item()
    metrics |= _stats("response_length", response_length)
    metrics["response_length/clip_ratio"] = (response_length >= max_response_length).float().mean().item()
    metrics |= _stats("prompt_length", prompt_length)
    metrics["prompt_length/clip_ratio"] = (prompt_length >= max_prompt_length).float().mean().item()
    return metrics


def timing_metrics(timings: dict[str, float], batch: TokenBatch) -> dict[str, float]:
    """`timing_s/<phase>` and, as verl does, milliseconds per token for the phases that scale with tokens."""
    response_tokens = batch.response_mask.sum().item()
    all_tokens = response_tokens + batch.attention_mask[:, : batch.prompt_length].sum().item()
    per_token = {"gen": response_tokens, "ref": all_tokens, "values": all_tokens, "adv": all_tokens,
                 "update_critic": all_tokens, "update_actor": all_tokens, "old_log_prob": all_tokens}
    metrics = {f"timing_s/{name}": seconds for name, seconds in timings.items()}
    metrics |= {f"timing_per_token_ms/{name}": timings[name] * 1000 / max(1, count)
                for name, count in per_token.items() if name in timings}
    return metrics


def throughput_metrics(batch: TokenBatch, step_seconds: float, n_gpus: int) -> dict[str, float]:
    """verl's perf/throughput: tokens (prompt + response) per second per GPU (per CPU rank on CPU)."""
    tokens = batch.attention_mask.sum().item()
    return {"perf/total_num_tokens": float(tokens), "perf/time_per_step": step_seconds,
            "perf/throughput": tokens / max(step_seconds, 1e-9) / max(1, n_gpus)}


def logprob_diff(batch: TokenBatch) -> float | None:
    """Mean |rollout - trainer| log-prob over response tokens: is the rollout engine running the trainer's weights?"""
    if batch.rollout_log_probs is None or batch.old_log_probs is None:
        return None
    mask = batch.response_mask.bool()
    return (batch.rollout_log_probs[mask] - batch.old_log_probs[mask]).abs().mean().item() if mask.any() else 0.0


def variance_proxy_metrics(batch: TokenBatch, grad_norm: float | None) -> dict[str, float]:
    """verl's gradient-variance proxies, logged whenever the batch carries sum pi^2 (calculate_sum_pi_squared).

    With W = sum_t (1 - 2 pi_t + sum_v pi_v^2) a sequence's squared score-function norm and A its mean advantage,
    E[||g||^2] ~ E[A^2 W] (proxy2, each term scaled by the sequence's squared mean IS weight when rollout
    correction weighs the loss); ||mean g||^2 = grad_norm^2 (proxy1); the variance of the mean gradient
    (proxy2 - proxy1) / (N - 1) (proxy3, at least 0)."""
    if batch.sum_pi_squared is None or batch.old_log_probs is None or batch.advantages is None:
        return {}
    from rlc_runtime.algorithms.masked import masked_mean, masked_sum

    mask = batch.response_mask
    per_token = 1 - 2 * batch.old_log_probs.exp() + batch.sum_pi_squared
    advantage = masked_mean(batch.advantages, mask, dim=-1)
    w = masked_sum(per_token, mask, dim=-1)
    scale, expected_w = torch.ones_like(advantage), w.mean().item()
    if batch.rollout_is_weights is not None:
        scale = masked_mean(batch.rollout_is_weights, mask, dim=-1) ** 2
        expected_w = masked_sum(per_token * batch.rollout_is_weights ** 2, mask, dim=-1).mean().item()  # as verl
    total_power = (scale * advantage ** 2 * w.clamp(min=0)).mean().item()
    signal = grad_norm ** 2 if grad_norm is not None else 0.0
    noise = max(0.0, (total_power - signal) / (len(advantage) - 1)) if grad_norm is not None and len(advantage) > 1 \
        else 0.0
    return {"variance_proxy/proxy1_signal_strength": signal, "variance_proxy/proxy2_total_power": total_power,
            "variance_proxy/proxy3_pure_noise": noise,
            "variance_proxy/expected_a_squared": (advantage ** 2).mean().item(),
            "variance_proxy/expected_w": expected_w}


def validation_metrics(data_sources: list[str], scores: list[float], n: int) -> dict[str, float]:
    """verl's `val-core/<data_source>/reward/mean@<n>`, plus the mean over all sources."""
    by_source: dict[str, list[float]] = defaultdict(list)
    for source, score in zip(data_sources, scores, strict=True):
        by_source[source].append(score)
    metrics = {f"val-core/{source}/reward/mean@{n}": sum(v) / len(v) for source, v in by_source.items()}
    if scores:
        metrics[f"val-core/all/reward/mean@{n}"] = sum(scores) / len(scores)
    return metrics
