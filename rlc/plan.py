"""resolved config -> LaunchPlan: pure data describing what runs where. No I/O, so it is easy to test and print.

The plan is computed from the resolved config alone; `rlc launch` flags (--nnodes, --backend, ...) have already
been folded into that config as overrides, so the plan and the runtime can never disagree about the topology.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from rlc.diagnostics import CompileError, Diagnostic

Executor = Literal["local", "ray", "slurm"]
RAY_PORT = 6379


@dataclass(frozen=True)
class Parallelism:
    backend: str
    world_size: int  # training ranks = GPUs (or CPU ranks on device cpu)
    data_parallel: int
    tensor_parallel: int
    pipeline_parallel: int
    rollout_placement: Literal["colocated", "separate"]  # on the training ranks, or on GPUs of its own
    rollout_tensor_parallel: int
    rollout_replicas: int  # vLLM engines; each spans `rollout_tensor_parallel` ranks of one node
    rollout_groups: list[list[int]]  # ranks of each engine (training ranks, or the rollout's own when separate)
    samples_per_step: int  # train_batch_size x rollout.n
    samples_per_rank: int
    mini_batch_per_rank: int
    micro_batch_per_rank: int


@dataclass(frozen=True)
class Node:
    index: int
    role: Literal["head", "worker"]
    gpus: int
    ranks: list[int]


@dataclass(frozen=True)
class LaunchPlan:
    name: str  # project/experiment, for people
    run_dir: str
    executor: Executor
    device: str
    nnodes: int
    gpus_per_node: int  # what each node must have: training GPUs, plus the rollout's own when separate
    parallelism: Parallelism
    nodes: list[Node]
    ray_port: int
    ray_resources: list[dict[str, float]]  # one placement bundle per node
    placement_strategy: str
    env: dict[str, str]
    driver: list[str]  # argv of the runtime driver
    notes: list[str] = field(default_factory=list)
    memory: Any = None  # rlc.memory.MemoryPlan: the per-GPU estimate (GPU runs whose model config is here)

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"memory": self.memory.to_json() if self.memory else None}


def make_plan(config: Any, run_dir: str, executor: Executor, python: str = "python3",
              memory: Any = None) -> LaunchPlan:
    from rlc.config.checks import data_parallel_size, rollout_ranks, rollout_tensor_parallel

    trainer, actor = config.trainer, config.actor_rollout_ref.actor
    rollout = config.actor_rollout_ref.rollout
    world = trainer.nnodes * trainer.n_gpus_per_node
    tp, pp = (actor.megatron.tensor_model_parallel_size, actor.megatron.pipeline_model_parallel_size) \
        if config.backend == "megatron" else (1, 1)
    dp = data_parallel_size(config)
    rollout_tp, generating = rollout_tensor_parallel(config), rollout_ranks(config)
    samples = config.data.train_batch_size * rollout.n
    parallelism = Parallelism(
        backend=config.backend, world_size=world, data_parallel=dp, tensor_parallel=tp, pipeline_parallel=pp,
        rollout_placement="colocated" if config.actor_rollout_ref.hybrid_engine else "separate",
        rollout_tensor_parallel=rollout_tp, rollout_replicas=max(1, generating // rollout_tp),
        rollout_groups=[list(range(i, min(i + rollout_tp, generating))) for i in range(0, generating, rollout_tp)],
        samples_per_step=samples, samples_per_rank=samples // dp,
        mini_batch_per_rank=actor.ppo_mini_batch_size * rollout.n // dp,
        micro_batch_per_rank=actor.ppo_micro_batch_size_per_gpu or 1,
    )
    _check_topology(config, parallelism)
    gpus = trainer.n_gpus_per_node
    node_gpus = gpus + (0 if config.actor_rollout_ref.hybrid_engine else rollout.n_gpus_per_node)
    nodes = [Node(i, "head" if i == 0 else "worker", node_gpus, list(range(i * gpus, (i + 1) * gpus)))
             for i in range(trainer.nnodes)]
    resource = "GPU" if trainer.device == "cuda" else "CPU"
    return LaunchPlan(
        name=f"{trainer.project_name}/{trainer.experiment_name}", run_dir=run_dir, executor=executor,
        device=trainer.device, nnodes=trainer.nnodes, gpus_per_node=node_gpus, parallelism=parallelism, nodes=nodes,
        ray_port=RAY_PORT, ray_resources=[{resource: float(node_gpus)} for _ in nodes],
        placement_strategy="STRICT_SPREAD" if trainer.nnodes > 1 else "PACK",
        env=_environment(config, executor), driver=[python, "-m", "rlc_runtime", run_dir], memory=memory,
    )


def _check_topology(config: Any, p: Parallelism) -> None:
    problems = []
    if p.world_size % (p.tensor_parallel * p.pipeline_parallel):
        problems.append(Diagnostic(f"tensor x pipeline parallel = {p.tensor_parallel * p.pipeline_parallel} does "
                                   f"not divide the {p.world_size} GPUs", ("actor_rollout_ref", "actor", "megatron")))
    if p.rollout_tensor_parallel > 1 and config.trainer.n_gpus_per_node % p.rollout_tensor_parallel:
        problems.append(Diagnostic(
            f"a vLLM tensor-parallel group of {p.rollout_tensor_parallel} would cross a node boundary "
            f"({config.trainer.n_gpus_per_node} GPUs per node)",
            ("actor_rollout_ref", "rollout", "tensor_model_parallel_size")))
    if problems:
        raise CompileError(problems)


def _environment(config: Any, executor: Executor) -> dict[str, str]:
    env = {"PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false", "RAY_DEDUP_LOGS": "0",
           "RAY_USAGE_STATS_ENABLED": "0"}
    if executor == "local":
        # Ray otherwise swaps 127.0.0.1 for the machine's routable address; one node needs no network at all.
        env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    if config.trainer.device == "cuda":
        env |= {"NCCL_DEBUG": "WARN", "TORCH_NCCL_AVOID_RECORD_STREAMS": "1",
                "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "false"}
    else:
        env |= {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
    return env


def run_dir_name(config: Any, stamp: str) -> str:
    """A directory name from project and experiment: anything outside [A-Za-z0-9._-] becomes '_'."""
    safe = [re.sub(r"[^A-Za-z0-9._-]+", "_", part).strip("._") or "run"
            for part in (config.trainer.project_name, config.trainer.experiment_name)]
    return f"runs/{safe[0]}/{safe[1]}-{stamp}"


def summary(plan: LaunchPlan) -> str:
    p = plan.parallelism
    lines = [
        f"run       {plan.name}  ->  {plan.run_dir}",
        f"executor  {plan.executor}   device {plan.device}   backend {p.backend}",
        f"cluster   {plan.nnodes} node(s) x {plan.gpus_per_node} {'GPU' if plan.device == 'cuda' else 'CPU rank'}(s)"
        f", {p.world_size} training rank(s)",
        f"parallel  data {p.data_parallel} x tensor {p.tensor_parallel} x pipeline {p.pipeline_parallel}",
        f"rollout   {p.rollout_replicas} engine(s) x tensor parallel {p.rollout_tensor_parallel} "
        f"({p.rollout_placement})",
        f"batch     {p.samples_per_step} samples/step, {p.samples_per_rank}/rank, mini {p.mini_batch_per_rank}/rank, "
        f"micro {p.micro_batch_per_rank}",
    ]
    lines += [f"node {n.index:<4} {n.role:<6} ranks {n.ranks[0]}-{n.ranks[-1]}" for n in plan.nodes]
    if plan.memory is not None:
        from rlc.memory import render

        lines.append(render(plan.memory))
    return "\n".join(lines + [f"note      {note}" for note in plan.notes])
