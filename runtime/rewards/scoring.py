"""The step's reward, from its sources, behind one submit / collect pair the controller calls.

Two sources run side by side: the reward worker (rule functions, a custom function or reward_api) and, with
`reward_model.enable`, the reward model's worker group. The score is
`model_weight * model score + rule_weight * other score` (rlc's keys; verl's reward model replaces the other
score, which is rlc's default `rule_weight: 0`, and then the reward worker is not asked at all). The model's ranks
get equal slices (FSDP's collectives need the same number of forwards on every rank); the padding samples'
scores are dropped. `start_reward_scoring` builds both groups for the controller.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rlc.topology import Placement, Topology
from rlc_runtime.workers.group import WorkerGroup


@dataclass
class Pending:
    rule: list[Any] | None  # the reward worker's call, when its score counts
    model: list[Any] | None  # one call per reward-model rank
    count: int  # samples submitted


class RewardScoring:
    def __init__(self, cfg: Any, rule: WorkerGroup, model: WorkerGroup | None) -> None:
        self.rm, self.rule, self.model = cfg.reward_model, rule, model

    def submit(self, samples: list[dict[str, Any]], step: int | None) -> Pending:
        rule_counts = self.model is None or self.rm.rule_weight != 0
        rule = self.rule.submit("score", samples, step) if rule_counts else None
        model = None
        if self.model is not None:
            parts = equal_slices(samples, self.model.world_size)
            model = [worker.score.remote(part) for worker, part in zip(self.model.workers, parts, strict=True)]
        return Pending(rule, model, len(samples))

    def collect(self, pending: Pending) -> tuple[list[float], dict[str, float], float, list[list[float]]]:
        """(scores in sample order, reward metrics, seconds of the slower source, GDPO's reward components of the
        reward worker's functions: [K][B], empty unless adv_estimator is gdpo)."""
        rule, metrics, seconds, components = ([], {}, 0.0, []) if pending.rule is None \
            else self.rule.wait(pending.rule, "score")[0]
        if pending.model is None:
            return rule, metrics, seconds, components
        per_rank = self.model.wait(pending.model, "score")
        model = [score for scores, _ in per_rank for score in scores][:pending.count]
        seconds = max([seconds] + [spent for _, spent in per_rank])
        metrics = metrics | {"reward/model_score/mean": sum(model) / max(1, len(model))}
        if pending.rule is None:
            return [self.rm.model_weight * m for m in model], metrics, seconds, components
        metrics["reward/rule_score/mean"] = sum(rule) / max(1, len(rule))
        return combine(rule, model, self.rm.rule_weight, self.rm.model_weight), metrics, seconds, components

    def score(self, samples: list[dict[str, Any]],
              step: int | None) -> tuple[list[float], dict[str, float], float, list[list[float]]]:
        return self.collect(self.submit(samples, step))


def start_reward_scoring(make_group: Callable[..., WorkerGroup], cfg: Any, topology: Topology,
                         payload: dict[str, Any]) -> RewardScoring:
    """The reward worker (one CPU process) and, with `reward_model.enable`, the reward model's group on the
    topology's placement, built; `make_group` is the controller's (it shuts every group down at the end)."""
    from rlc_runtime.workers.reward import RewardWorker
    from rlc_runtime.workers.reward_model import RewardModelWorker

    rules = make_group("reward", RewardWorker, Placement.one_node(1, "cpu"), "cpu", args=(payload,),
                       distributed=False)
    model = None
    if topology.reward_model is not None:
        model = make_group("reward_model", RewardModelWorker, topology.reward_model, cfg.trainer.device,
                           args=(payload,), distributed=topology.reward_model.world_size > 1,
                           timeout_s=cfg.reward_model.nccl_timeout)
        model.call("build")
    return RewardScoring(cfg, rules, model)


def combine(rule: list[float], model: list[float], rule_weight: float, model_weight: float) -> list[float]:
    return [rule_weight * r + model_weight * m for r, m in zip(rule, model, strict=True)]


def equal_slices(items: list[Any], parts: int) -> list[list[Any]]:
    """`parts` contiguous slices of equal length; the last item repeats to fill the last ones."""
    size = -(-len(items) // parts)
    padded = items + items[-1:] * (size * parts - len(items))
    return [padded[i * size:(i + 1) * size] for i in range(parts)]
