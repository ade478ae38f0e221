"""resolved config -> LaunchPlan: pure data describing what runs where. No I/O, so it is easy to test and print.

The plan is computed from the resolved config alone; `rlc launch` flags (--nnodes, --backend, ...) have already
been folded into that config as overrides. Its `topology` (`rlc.topology.Topology`: parallel sizes, rollout engines,
Ray placement) is what the runtime reads back from plan.json to place its workers, so the plan and the running job
can never disagree about the topology.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from rlc.diagnostics import CompileError, Diagnostic
from rlc.topology import Topology

Executor = Literal["local", "ray", "slurm"]


@dataclass(frozen=True)
class BatchSizes:
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
    gpus_per_node: int  # what each node must have: training GPUs, plus the rollout's and the reward model's own
    topology: Topology
    batch: BatchSizes
    nodes: list[Node]
    ray_port: int
    env: dict[str, str]
    driver: list[str]  # argv of the runtime driver
    notes: list[str] = field(default_factory=list)
    ray: dict[str, Any] = field(default_factory=dict)  # the `ray_cluster` section: ports, dashboard, auth, timeout
    slurm: dict[str, Any] = field(default_factory=dict)  # the `slurm` section: sbatch and container options
    pass_env: list[str] = field(default_factory=list)  # names of variables sent with the job, never their values
    memory: Any = None  # rlc.memory.MemoryPlan: the per-GPU estimate (GPU runs whose model config is here)
    unpinned: dict[str, str] = field(default_factory=dict)  # Hub references not pinned (key -> why)

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"memory": self.memory.to_json() if self.memory else None}


def make_plan(config: Any, run_dir: str, executor: Executor, python: str = "python3",
              memory: Any = None, unpinned: dict[str, str] | None = None,
              referenced_env: tuple[str, ...] = ()) -> LaunchPlan:
    """`referenced_env`: the variables the config reads (`${oc.env:VAR}`), which a Ray job must be sent."""
    trainer, actor = config.trainer, config.actor_rollout_ref.actor
    rollout = config.actor_rollout_ref.rollout
    topology = Topology.from_config(config)
    _check_topology(config, topology)
    _check_executor(config, executor)
    dp, samples = topology.data_parallel, config.data.train_batch_size * rollout.n
    batch = BatchSizes(samples_per_step=samples, samples_per_rank=samples // dp,
                       mini_batch_per_rank=actor.ppo_mini_batch_size * rollout.n // dp,
                       micro_batch_per_rank=actor.ppo_micro_batch_size_per_gpu or 1)
    gpus = trainer.n_gpus_per_node
    # Each node must have the training GPUs plus the rollout's and the reward model's own (ranks of their own;
    # a rollout that shares the trainer's GPU adds none).
    own_rollout = topology.rollout if topology.rollout_placement == "separate" else None
    node_gpus = gpus + sum(p.ranks_per_node for p in (own_rollout, topology.reward_model) if p)
    nodes = [Node(i, "head" if i == 0 else "worker", node_gpus, list(range(i * gpus, (i + 1) * gpus)))
             for i in range(trainer.nnodes)]
    return LaunchPlan(
        name=f"{trainer.project_name}/{trainer.experiment_name}", run_dir=run_dir, executor=executor,
        device=trainer.device, nnodes=trainer.nnodes, gpus_per_node=node_gpus, topology=topology, batch=batch,
        nodes=nodes, ray_port=config.ray_cluster.port, env=_environment(config, executor),
        driver=[python, "-m", "rlc_runtime", run_dir], memory=memory, unpinned=dict(unpinned or {}),
        ray=config.ray_cluster.model_dump(mode="json"), slurm=config.slurm.model_dump(mode="json"),
        pass_env=sorted({*config.ray_cluster.pass_env, *referenced_env}),
    )


def _check_executor(config: Any, executor: Executor) -> None:
    """The local executor starts one Ray head on this machine: a plan for more nodes would run on one, short of
    the GPUs it was sized for."""
    if executor == "local" and config.trainer.nnodes > 1:
        raise CompileError([Diagnostic(
            f"set to {config.trainer.nnodes}, but --executor local runs on this machine only",
            ("trainer", "nnodes"), hint="use --executor slurm (sbatch) or --executor ray (a Ray cluster), or "
            "--nnodes 1")])


def _check_topology(config: Any, t: Topology) -> None:
    problems = []
    replica = t.tensor_parallel * t.pipeline_parallel * t.context_parallel
    if t.world_size % replica:
        problems.append(Diagnostic(f"tensor x pipeline x context parallel = {replica} does not divide the "
                                   f"{t.world_size} GPUs", ("actor_rollout_ref", "actor", "megatron")))
    if t.rollout_tensor_parallel > 1 and config.trainer.n_gpus_per_node % t.rollout_tensor_parallel:
        problems.append(Diagnostic(
            f"a vLLM tensor-parallel group of {t.rollout_tensor_parallel} would cross a node boundary "
            f"({config.trainer.n_gpus_per_node} GPUs per node)",
            ("actor_rollout_ref", "rollout", "tensor_model_parallel_size")))
    if problems:
        raise CompileError(problems)


def _environment(config: Any, executor: Executor) -> dict[str, str]:
    env = {"PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false", "RAY_DEDUP_LOGS": "0",
           "RAY_USAGE_STATS_ENABLED": "0"}
    if executor != "local":
        # The Ray CLI and every node read the mode from here; the token itself never enters the run directory.
        env["RAY_AUTH_MODE"] = config.ray_cluster.auth
        if config.ray_cluster.auth_token_path:
            env["RAY_AUTH_TOKEN_PATH"] = config.ray_cluster.auth_token_path
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
    p, b = plan.topology, plan.batch
    lines = [
        f"run       {plan.name}  ->  {plan.run_dir}",
        f"executor  {plan.executor}   device {plan.device}   backend {p.backend}",
        f"cluster   {plan.nnodes} node(s) x {plan.gpus_per_node} {'GPU' if plan.device == 'cuda' else 'CPU rank'}(s)"
        f", {p.world_size} training rank(s)",
        f"parallel  data {p.data_parallel} x tensor {p.tensor_parallel} x pipeline {p.pipeline_parallel}"
        + (f" x sequence (Ulysses) {p.sequence_parallel}" if p.sequence_parallel > 1 else "")
        + (f" x context {p.context_parallel}" if p.context_parallel > 1 else ""),
        f"rollout   {p.rollout_replicas} engine(s) x tensor parallel {p.rollout_tensor_parallel} "
        f"({p.rollout_placement})",
        *([f"reward    model on {p.reward_model.world_size} rank(s) of its own"
           + (" (FSDP2)" if p.reward_model.world_size > 1 else "")] if p.reward_model else []),
        f"batch     {b.samples_per_step} samples/step, {b.samples_per_rank}/rank, mini {b.mini_batch_per_rank}/rank, "
        f"micro {b.micro_batch_per_rank}",
    ]
    lines += [f"node {n.index:<4} {n.role:<6} ranks {n.ranks[0]}-{n.ranks[-1]}" for n in plan.nodes]
    if plan.memory is not None:
        from rlc.memory import render

        lines.append(render(plan.memory))
    lines += [f"unpinned  {key}: {why}" for key, why in plan.unpinned.items()]
    return "\n".join(lines + [f"note      {note}" for note in plan.notes])
