"""The PPO/GRPO update and the forward-only passes, written once for every engine (see `engines.base`).

Decisions, and why:
- Loss weighting: each micro-batch's aggregated loss is rescaled by its share of the global mini-batch (its
  response tokens for `token-mean`, its non-empty sequences for the `seq-mean-*` modes; `seq-mean-token-sum-norm`
  is a plain sum over a constant length) and multiplied by the data-parallel size that the engines' gradient
  averaging divides by. So the gradient equals that of the whole mini-batch's loss on one rank, whatever the
  micro-batch size, the world size or the backend.
- The shuffle is seeded by `data_loader_seed`, the update count and the epoch: every update (and every PPO epoch)
  draws a new permutation, every rank of a model-parallel group the same one, and a resumed run the one the
  uninterrupted run would have drawn.
- The learning rate is `optim.lr` times `optim.Schedule` at the update count (verl's warmup and decay), stepped
  once per update call; the count is this object's state, saved with the engine's checkpoint.
- The policy loss goes through `algorithms.policy_losses.compute_policy_loss` by `policy_loss.loss_mode`; the KL
  loss is added with `kl_loss_coef` and the entropy bonus subtracted with `entropy_coeff`, as in verl's actor.
- Metrics are means over micro-batches, then over data-parallel ranks, under verl's names.
- Dynamic batching (`use_dynamic_bsz`): micro-batches are cut by a token budget (`ppo_max_token_len_per_gpu`,
  `log_prob_max_token_len_per_gpu`: prompt + response tokens, as verl counts them) instead of a row count, balanced
  longest-first, as few as fit (the budget is per GPU: under Ulysses a micro-batch holds sp times as many tokens,
  as in verl); every data-parallel rank runs as many as the rank that needs the most (FSDP's
  gathers are collectives). The weighting above makes the gradient independent of how rows are grouped, so it
  equals the fixed micro-batches' exactly; forward-only results are put back in the rows' order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from rlc_runtime.algorithms.losses import agg_loss, kl_penalty, value_loss
from rlc_runtime.algorithms.policy_losses import compute_policy_loss
from rlc_runtime.batch import TokenBatch
from rlc_runtime.engines.base import ModelOutputs, TrainEngine, micro_batches, token_budget_groups
from rlc_runtime.engines.optim import Schedule
from rlc_runtime.metrics import mean_metrics

SUM_MODE = "seq-mean-token-sum-norm"  # a sum over sequences (over a constant length): micro-batch losses add up
Objective = Callable[[TokenBatch, ModelOutputs], tuple[torch.Tensor, dict[str, Any]]]


class Update:
    """The updates of one trained role (`section`: the actor or critic config) on `engine`."""

    def __init__(self, engine: TrainEngine, section: Any, objective: Objective, prefix: str,
                 samples_per_prompt: int) -> None:
        self.engine, self.section, self.objective, self.prefix = engine, section, objective, prefix
        self.mini_batch_size = max(1, section.ppo_mini_batch_size * samples_per_prompt // engine.data_parallel_size)
        optim = section.optim
        self.schedule = Schedule(optim.lr_scheduler_type, optim.lr_warmup_steps, optim.lr_warmup_steps_ratio,
                                 optim.total_training_steps, optim.min_lr_ratio, optim.num_cycles)
        self.step = 0  # updates so far: the schedule's position and the shuffle's seed
        self.token_budget = section.ppo_max_token_len_per_gpu if section.use_dynamic_bsz else None

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = int(state.get("step", 0))

    def __call__(self, batch: TokenBatch) -> dict[str, float]:
        """`ppo_epochs` passes over mini-batches of this rank's `batch`, one optimizer step each."""
        engine, section = self.engine, self.section
        full, _ = engine.data_batch(batch)
        lr = section.optim.lr * self.schedule(self.step)
        size = min(self.mini_batch_size, len(full))
        results: list[dict[str, Any]] = []
        norms = []
        with engine.resident(training=True):  # offloaded state comes back once for all mini-batches
            for epoch in range(section.ppo_epochs):
                order = self._order(len(full), epoch)
                for start in range(0, len(full), size):
                    mini = full.select(order[start:start + size])
                    parts, _ = split_micro_batches(engine, mini, section.ppo_micro_batch_size_per_gpu,
                                                   self.token_budget)
                    results += engine.forward_backward(parts, self._weighted(mini), backward=True)
                    norms.append(engine.optimizer_step(lr, section.grad_clip))
        self.step += 1
        metrics = _mean_over_ranks(engine, mean_metrics(results))
        metrics |= {f"{self.prefix}/grad_norm": sum(norms) / len(norms), f"{self.prefix}/lr": lr}
        if engine.device == "cuda":
            metrics["perf/max_memory_allocated_gb"] = torch.cuda.max_memory_allocated() / 2**30
        return metrics

    def _weighted(self, mini: TokenBatch) -> Callable[[TokenBatch, ModelOutputs], tuple[torch.Tensor, dict]]:
        """The objective with each micro-batch's loss scaled by its share of the global mini-batch."""
        mode, world = self.section.loss_agg_mode, self.engine.data_parallel_size
        total = float(self.engine.all_reduce_sum(torch.tensor([loss_weight(mini, mode)], dtype=torch.float64)))

        def weighted(part: TokenBatch, outputs: ModelOutputs) -> tuple[torch.Tensor, dict[str, Any]]:
            loss, metrics = self.objective(part, outputs)
            share = 1.0 if mode == SUM_MODE else loss_weight(part, mode) / max(total, 1.0)
            return loss * (world * share), metrics

        return weighted

    def _order(self, count: int, epoch: int) -> list[int]:
        if not self.section.shuffle:
            return list(range(count))
        seed = (self.section.data_loader_seed or 0) + 1000 * self.step + epoch
        return torch.randperm(count, generator=torch.Generator().manual_seed(seed)).tolist()


def policy_update(engine: TrainEngine, cfg: Any) -> Update:
    actor = cfg.actor_rollout_ref.actor
    correction = cfg.algorithm.rollout_correction
    bypass = correction if correction.bypass_mode else None
    return Update(engine, actor, lambda part, out: policy_objective(actor, part, out, bypass), "actor",
                  cfg.actor_rollout_ref.rollout.n)


def critic_update(engine: TrainEngine, cfg: Any) -> Update:
    critic = cfg.critic
    return Update(engine, critic, lambda part, out: value_objective(critic, part, out), "critic",
                  cfg.actor_rollout_ref.rollout.n)


def policy_objective(actor: Any, part: TokenBatch, outputs: ModelOutputs,
                     bypass: Any = None) -> tuple[torch.Tensor, dict[str, Any]]:
    """verl's actor loss on one micro-batch: policy loss - entropy_coeff x entropy + kl_loss_coef x KL(ref).
    `bypass`: `algorithm.rollout_correction` in bypass mode (the batch's old log-probs are the rollout's)."""
    log_prob = outputs.log_probs()
    device, mode = log_prob.device, actor.loss_agg_mode
    mask = part.response_mask.to(device)
    old = part.old_log_probs.to(device) if part.old_log_probs is not None else log_prob.detach()
    weights = part.rollout_is_weights.to(device) if part.rollout_is_weights is not None else None
    pg_loss, pg_metrics = compute_policy_loss(actor.policy_loss.loss_mode, old, log_prob,
                                              part.advantages.to(device), mask, mode, actor, weights, bypass)
    entropy = agg_loss(outputs.entropy(grad=actor.entropy_coeff != 0), mask, mode)
    loss = pg_loss - actor.entropy_coeff * entropy
    metrics = {"actor/pg_loss": pg_loss.detach(), "actor/entropy": entropy.detach(), **pg_metrics}
    if actor.use_kl_loss:
        if part.ref_log_probs is None:
            raise ValueError("use_kl_loss is on but the batch carries no ref_log_probs")
        kl = agg_loss(kl_penalty(log_prob, part.ref_log_probs.to(device), actor.kl_loss_type), mask, mode)
        loss = loss + actor.kl_loss_coef * kl
        metrics |= {"actor/kl_loss": kl.detach(), "actor/kl_coef": actor.kl_loss_coef}
    return loss, metrics


def value_objective(critic: Any, part: TokenBatch, outputs: ModelOutputs) -> tuple[torch.Tensor, dict[str, Any]]:
    """PPO's clipped value loss on one micro-batch."""
    values = outputs.values()
    device = values.device
    mask = part.response_mask.to(device)
    loss, clipfrac = value_loss(values, part.returns.to(device), part.values.to(device), mask,
                                critic.cliprange_value, critic.loss_agg_mode)
    vpred_mean = (values.detach() * mask).sum() / mask.sum().clamp(min=1)
    return loss, {"critic/vf_loss": loss.detach(), "critic/vf_clipfrac": clipfrac, "critic/vpred_mean": vpred_mean}


PER_TOKEN_OUTPUTS: dict[str, Callable[[ModelOutputs], torch.Tensor]] = {
    "log_probs": lambda outputs: outputs.log_probs(),
    "entropy": lambda outputs: outputs.entropy(grad=False),
    "sum_pi_squared": lambda outputs: outputs.sum_pi_squared(),
}


def compute_outputs(engine: TrainEngine, batch: TokenBatch, micro_batch_size: int | None, names: Sequence[str],
                    token_budget: int | None = None) -> dict[str, torch.Tensor]:
    """The named per-token outputs (`PER_TOKEN_OUTPUTS`), each [B, R] for this rank's responses and 0 on padding,
    under the current weights; micro-batches of `micro_batch_size` rows, or of up to `token_budget` tokens."""

    def read(part: TokenBatch, outputs: ModelOutputs) -> tuple[None, dict[str, Any]]:
        found = {name: PER_TOKEN_OUTPUTS[name](outputs) for name in names}
        mask = part.response_mask.to(found[names[0]].device)
        return None, {name: value * mask for name, value in found.items()}

    return _forward(engine, batch, micro_batch_size, token_budget, read)


def compute_log_probs(engine: TrainEngine, batch: TokenBatch, micro_batch_size: int | None,
                      with_entropy: bool = False,
                      token_budget: int | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """[B, R] log-probs of this rank's responses (0 on padding) under the current weights, and the entropy."""
    results = compute_outputs(engine, batch, micro_batch_size, ("log_probs", "entropy") if with_entropy
                              else ("log_probs",), token_budget)
    return results["log_probs"], results.get("entropy")


def compute_values(engine: TrainEngine, batch: TokenBatch, micro_batch_size: int | None,
                   token_budget: int | None = None) -> torch.Tensor:
    """[B, R] value predictions for this rank's rows (0 on padding)."""

    def read(part: TokenBatch, outputs: ModelOutputs) -> tuple[None, dict[str, Any]]:
        values = outputs.values()
        return None, {"values": values * part.response_mask.to(values.device)}

    return _forward(engine, batch, micro_batch_size, token_budget, read)["values"]


def _forward(engine: TrainEngine, batch: TokenBatch, micro_batch_size: int | None, token_budget: int | None,
             read: Callable[[TokenBatch, ModelOutputs], tuple[None, dict[str, Any]]]) -> dict[str, torch.Tensor]:
    full, mine = engine.data_batch(batch)
    parts, order = split_micro_batches(engine, full, micro_batch_size, token_budget)
    results = engine.forward_backward(parts, read, backward=False)
    back = torch.argsort(torch.tensor(order))  # the micro-batches hold the rows in `order`
    return {key: torch.cat([r[key] for r in results])[back][mine] for key in results[0]}


def split_micro_batches(engine: TrainEngine, batch: TokenBatch, size: int | None,
                        token_budget: int | None) -> tuple[list[TokenBatch], list[int]]:
    """Micro-batches of `size` rows, or of at most `token_budget` tokens (as many on every data-parallel rank);
    and the order of the rows they hold."""
    if token_budget is None:
        return micro_batches(batch, size, engine.equal_micro_batches), list(range(len(batch)))
    token_budget *= engine.sequence_parallel_size  # each rank of a Ulysses group holds 1/sp of the tokens (verl)
    if engine.equal_micro_batches:
        raise ValueError("use_dynamic_bsz needs micro-batches of different sizes, which megatron's pipeline "
                         "(pipeline_model_parallel_size > 1) cannot run: turn use_dynamic_bsz off")
    lengths = batch.attention_mask.sum(-1).tolist()
    if max(lengths) > token_budget:
        raise ValueError(f"a sequence of {max(lengths)} tokens exceeds the micro-batch token budget {token_budget} "
                         "(ppo_max_token_len_per_gpu / log_prob_max_token_len_per_gpu, times the Ulysses size): "
                         "raise it to at least max_prompt_length + max_response_length")
    count = -(-sum(lengths) // token_budget)
    while True:  # every rank takes the same decisions from the same reduced numbers
        count = int(engine.all_reduce_max(torch.tensor([count], dtype=torch.float64)))
        groups = token_budget_groups(lengths, count, token_budget)
        if not engine.all_reduce_max(torch.tensor([groups is None], dtype=torch.float64)):
            break
        count += 1
    return [batch.select(group) for group in groups], [row for group in groups for row in group]


def loss_weight(batch: TokenBatch, mode: str) -> float:
    """What a mean-type `mode` averages over: tokens for token-mean, sequences that have any response token for
    the seq-mean modes (agg_loss leaves all-padding rows out of its means)."""
    if mode == "token-mean":
        return float(batch.response_mask.sum())
    return float((batch.response_mask.sum(-1) > 0).sum())


def _mean_over_ranks(engine: TrainEngine, metrics: dict[str, float]) -> dict[str, float]:
    """Every rank returns the same, global numbers."""
    if engine.data_parallel_size == 1:
        return metrics
    keys = sorted(metrics)
    total = engine.all_reduce_sum(torch.tensor([metrics[k] for k in keys], dtype=torch.float64))
    return dict(zip(keys, (total / engine.data_parallel_size).tolist(), strict=True))
