"""The job's topology, decided once by the compiler: parallel sizes, rollout engines and Ray placement.

As torchtitan's `ParallelDims`, one object answers every "how many, and where" question, computed from the
resolved config alone (no I/O, no torch). The compiler writes it into plan.json; the runtime reads it back
(`Topology.from_json`) and places its worker groups and rollout engines from it, so the launch plan and the running
job cannot disagree. The per-rank rules that other code shares (data-parallel size, rollout ranks and tensor
parallel size) live here too, once.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from rlc.config.base import substituted

Resource = Literal["GPU", "CPU"]


@dataclass(frozen=True)
class Placement:
    """One Ray placement group: a bundle per node, ranks filling the nodes in order (rank r on node
    r // ranks_per_node), spread over distinct nodes when there are several."""

    resource: Resource
    nodes: int
    ranks_per_node: int
    strategy: Literal["PACK", "STRICT_SPREAD"]

    @staticmethod
    def over(resource: Resource, nodes: int, ranks_per_node: int) -> Placement:
        return Placement(resource, nodes, ranks_per_node, "STRICT_SPREAD" if nodes > 1 else "PACK")

    @property
    def world_size(self) -> int:
        return self.nodes * self.ranks_per_node

    def bundles(self) -> list[dict[str, float]]:
        return [{self.resource: float(self.ranks_per_node)}] * self.nodes

    def node_of(self, rank: int) -> int:
        return rank // self.ranks_per_node

    @staticmethod
    def one_node(ranks: int, device: str) -> Placement:
        return Placement.over("GPU" if device == "cuda" else "CPU", 1, ranks)


@dataclass(frozen=True)
class Topology:
    backend: str
    device: str
    world_size: int  # training ranks = GPUs (or CPU ranks on device cpu)
    data_parallel: int
    tensor_parallel: int
    pipeline_parallel: int
    sequence_parallel: int  # Ulysses
    expert_parallel: int
    # on the training ranks, on GPUs of its own, or as processes of its own on the training GPU (CUDA IPC)
    rollout_placement: Literal["colocated", "separate", "shared"]
    rollout_tensor_parallel: int
    rollout_groups: list[list[int]]  # ranks of each engine (training ranks, or the rollout's own when separate)
    train: Placement
    rollout: Placement | None  # None when colocated: the training ranks generate
    reward_model: Placement | None = None  # the reward model's ranks (reward_model.enable), always its own
    context_parallel: int = 1  # Megatron: ranks that split each sequence (a plan.json written before it has none)

    @property
    def rollout_replicas(self) -> int:
        return len(self.rollout_groups)

    @classmethod
    def from_config(cls, cfg: Any) -> Topology:
        trainer, arf = cfg.trainer, cfg.actor_rollout_ref
        megatron = arf.actor.megatron
        tp, pp, cp, ep = (megatron.tensor_model_parallel_size, megatron.pipeline_model_parallel_size,
                          megatron.context_parallel_size, megatron.expert_model_parallel_size) \
            if cfg.backend == "megatron" else (1, 1, 1, 1)
        resource: Resource = "GPU" if trainer.device == "cuda" else "CPU"
        rollout_tp, generating = rollout_tensor_parallel(cfg), rollout_ranks(cfg)
        colocated, shared = arf.hybrid_engine, arf.rollout.share_trainer_gpu
        train = Placement.over(resource, trainer.nnodes, trainer.n_gpus_per_node)
        return cls(
            backend=cfg.backend, device=trainer.device, world_size=n_gpus(cfg), data_parallel=data_parallel_size(cfg),
            tensor_parallel=tp, pipeline_parallel=pp, sequence_parallel=arf.actor.ulysses_sequence_parallel_size,
            expert_parallel=ep, context_parallel=cp,
            rollout_placement="colocated" if colocated else "shared" if shared else "separate",
            rollout_tensor_parallel=rollout_tp,
            rollout_groups=[list(range(i, min(i + rollout_tp, generating))) for i in range(0, generating, rollout_tp)],
            train=train, rollout=None if colocated else train if shared else Placement.over(
                resource, trainer.nnodes, arf.rollout.n_gpus_per_node),
            reward_model=reward_model_placement(cfg, resource))

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Topology:
        rollout, reward_model = data.get("rollout"), data.get("reward_model")
        return cls(**{**data, "train": Placement(**data["train"]),
                      "rollout": Placement(**rollout) if rollout else None,
                      "reward_model": Placement(**reward_model) if reward_model else None})

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def n_gpus(cfg: Any) -> int:
    return cfg.trainer.nnodes * cfg.trainer.n_gpus_per_node


def data_parallel_size(cfg: Any) -> int:
    """Ranks that each take a slice of the batch: GPUs / Ulysses size under FSDP, GPUs / (tp * pp * cp) under
    Megatron (verl's data-parallel size: the ranks of a context-parallel group share their samples)."""
    if cfg.backend == "megatron":
        return max(1, n_gpus(cfg) // megatron_model_parallel(cfg.actor_rollout_ref.actor.megatron))
    return max(1, n_gpus(cfg) // cfg.actor_rollout_ref.actor.ulysses_sequence_parallel_size)


def megatron_model_parallel(megatron: Any) -> int:
    """The ranks of one Megatron model replica: tensor x pipeline x context parallel."""
    return megatron.tensor_model_parallel_size * megatron.pipeline_model_parallel_size * \
        megatron.context_parallel_size


def rollout_ranks(cfg: Any) -> int:
    """Ranks that generate: every training rank (colocated), or the rollout's own GPUs (`hybrid_engine: false`)."""
    if cfg.actor_rollout_ref.hybrid_engine or cfg.actor_rollout_ref.rollout.share_trainer_gpu:
        return n_gpus(cfg)
    return cfg.trainer.nnodes * cfg.actor_rollout_ref.rollout.n_gpus_per_node


def rollout_tensor_parallel(cfg: Any) -> int:
    """Ranks per rollout engine: the k ranks of a vLLM tensor-parallel engine share prompts, seed and samples."""
    rollout = cfg.actor_rollout_ref.rollout
    return rollout.tensor_model_parallel_size if substituted(rollout, "name") == "vllm" else 1


def reward_model_placement(cfg: Any, resource: Resource) -> Placement | None:
    """The reward model's ranks: n_gpus_per_node x nnodes of its own with `enable_resource_pool` (FSDP2 shards it
    over them), else one. Never the training ranks: those hold the policy and its optimizer."""
    rm = cfg.reward_model
    if not rm.enable:
        return None
    if not rm.enable_resource_pool:
        return Placement.over(resource, 1, 1)
    return Placement.over(resource, max(1, rm.nnodes or 0), max(1, rm.n_gpus_per_node or 0))
