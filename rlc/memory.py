"""Per-GPU memory of a run, estimated before launch from the resolved config and the model's config.json.

Pure arithmetic: no torch, no weights, no network. The model's shape comes from its config.json (a local folder,
or the local Hugging Face cache for a Hub id); parameters are counted by layer kind the way transformers builds
them, so the counts are exact for the families it knows (Llama, Qwen2/3, Mistral, Mixtral, Qwen2/3-MoE, ...).

A training rank passes through two peaks, and the estimate is the larger:
- **rollout**: the training state that stays resident while vLLM generates (FSDP shards of the actor's fp32
  parameters and Adam moments, the reference's bf16 shards) plus vLLM's pool, `gpu_memory_utilization` x the
  GPU's memory, which vLLM claims whole and splits into its own weights, activations and the KV cache;
- **update**: that state plus fp32 gradients, the decoder layer FSDP gathers, the activations of the largest
  micro-batch (layer inputs only under gradient checkpointing), and the logits spike: the response positions
  times the vocabulary, kept in several float32 copies by the log-prob, entropy and their backward.

Constants that are habits of the libraries rather than arithmetic (bytes of activations per token, copies of the
logits) were measured on the GPU host; README's memory table compares the estimate with measured peaks.
"""

from __future__ import annotations

import functools
import json
import math
import os
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rlc.config.base import substituted
from rlc.diagnostics import Diagnostic
from rlc.hub import cached_sha
from rlc.topology import megatron_model_parallel, n_gpus

GiB = 2**30
CUDA_CONTEXT = 0.6 * GiB  # the CUDA context, cuBLAS workspaces and NCCL buffers: outside torch's allocator
LOGIT_COPIES_UPDATE = 4.5  # bf16 logits, their fp32 copy, the tempered copy, softmax/entropy, and the gradients
LOGIT_COPIES_NO_GRAD = 2.5  # fp32 copy, tempered copy, the logsumexp temporary; freed micro-batch by micro-batch
ALLOCATOR_SLACK = 0.15  # torch's caching allocator reserves this much beyond a phase's live tensors (measured)
VLLM_ASLEEP = 1.0 * GiB  # what a sleeping vLLM keeps: CUDA graphs, compile buffers (measured: 0.8-1.3 GiB)
HEADROOM = 0.95  # a suggested change must leave this much of the GPU's memory: the estimate is good to ~5%


class UnknownShape(ValueError):
    """A config.json that lacks what the estimate needs (a model type rlc does not know the keys of)."""


REQUIRED = ("vocab_size", "hidden_size", "num_attention_heads", "num_hidden_layers")


@dataclass(frozen=True)
class ModelShape:
    """What the estimate needs of a decoder-only model's config.json."""

    vocab: int
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    tied: bool = False
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    qk_norm: bool = False
    experts: int = 0  # routed experts per MoE layer (0: dense)
    expert_intermediate: int = 0
    shared_intermediate: int = 0  # Qwen2-MoE's shared expert (with its sigmoid gate)
    moe_layers: tuple[int, ...] = ()

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> ModelShape:
        cfg = cfg.get("text_config", cfg)  # multimodal wrappers keep the language model's shape inside
        if missing := [key for key in REQUIRED if not isinstance(cfg.get(key), int) or cfg[key] <= 0]:
            raise UnknownShape(f"its config.json has no {', '.join(missing)}")
        kind = cfg.get("model_type", "")
        hidden, heads, layers = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_hidden_layers"]
        experts = cfg.get("num_local_experts") or cfg.get("num_experts") or 0
        return cls(
            vocab=cfg["vocab_size"], hidden=hidden, layers=layers, heads=heads,
            kv_heads=cfg.get("num_key_value_heads") or heads, head_dim=cfg.get("head_dim") or hidden // heads,
            intermediate=cfg.get("intermediate_size", 4 * hidden), tied=bool(cfg.get("tie_word_embeddings", False)),
            qkv_bias=kind in ("qwen2", "qwen2_moe") or bool(cfg.get("attention_bias", False)),
            o_bias=bool(cfg.get("attention_bias", False)) and kind not in ("qwen2", "qwen2_moe"),
            mlp_bias=bool(cfg.get("mlp_bias", False)), qk_norm=kind in ("qwen3", "qwen3_moe"),
            experts=experts, expert_intermediate=cfg.get("moe_intermediate_size") or cfg.get("intermediate_size", 0),
            shared_intermediate=cfg.get("shared_expert_intermediate_size") or 0,
            moe_layers=_moe_layers(cfg, layers) if experts else (),
        )

    def layer_tensors(self, index: int) -> list[tuple[int, ...]]:
        """Shapes of decoder layer `index`'s parameters, as transformers lays them out (fused MoE experts)."""
        h, q, kv, d = self.hidden, self.heads * self.head_dim, self.kv_heads * self.head_dim, self.head_dim
        shapes: list[tuple[int, ...]] = [(q, h), (kv, h), (kv, h), (h, q), (h,), (h,)]  # q k v o, two norms
        shapes += [(q,), (kv,), (kv,)] * self.qkv_bias + [(h,)] * self.o_bias + [(d,), (d,)] * self.qk_norm
        if index in self.moe_layers:
            e, i = self.experts, self.expert_intermediate
            shapes += [(e, h), (e, 2 * i, h), (e, h, i)]  # router, gate+up, down
            if self.shared_intermediate:
                s = self.shared_intermediate
                shapes += [(s, h), (s, h), (h, s), (1, h)]  # the shared expert and its gate
        else:
            i = self.intermediate
            shapes += [(i, h), (i, h), (h, i)] + [(i,), (i,), (h,)] * self.mlp_bias
        return shapes

    def tensors(self, head: str = "lm") -> list[tuple[int, ...]]:
        """Every parameter's shape; `head` is "lm" (the policy), "value" (a critic's Linear(hidden, 1)) or
        "none"."""
        shapes: list[tuple[int, ...]] = [(self.vocab, self.hidden)]
        for index in range(self.layers):
            shapes += self.layer_tensors(index)
        shapes.append((self.hidden,))
        return shapes + {"lm": [] if self.tied else [(self.vocab, self.hidden)], "value": [(1, self.hidden)],
                         "none": []}[head]

    def parameters(self, head: str = "lm", shards: int = 1) -> int:
        """Parameters (per rank when FSDP2 shards every tensor's first dimension over `shards` ranks, padding it
        to a multiple of `shards`)."""
        return sum(math.ceil(s[0] / shards) * math.prod(s[1:]) for s in self.tensors(head))

    def expert_parameters(self) -> int:
        """Parameters of the routed experts (what megatron splits over expert-parallel ranks instead)."""
        return len(self.moe_layers) * self.experts * 3 * self.expert_intermediate * self.hidden

    def adapter_parameters(self, rank: int, shards: int = 1) -> int:
        """LoRA's parameters at `rank` (per rank when FSDP shards them): rank x (in + out) for every 2-D weight
        of the decoder layers, as peft's all-linear adapts them (the embeddings and the output layer left out).
        An upper bound when target_modules names fewer."""
        matrices = [s for index in range(self.layers) for s in self.layer_tensors(index) if len(s) == 2]
        return sum(math.ceil(rank / shards) * s[1] + math.ceil(s[0] / shards) * rank for s in matrices)

    def kv_bytes_per_token(self, dtype_bytes: int = 2) -> int:
        return 2 * self.layers * self.kv_heads * self.head_dim * dtype_bytes

    def activation_bytes_per_token(self, checkpointing: bool) -> int:
        """bf16 activations one token keeps for backward: layer inputs only when checkpointed (plus one layer
        recomputed at a time), every layer's saved tensors otherwise."""
        h, q, kv = self.hidden, self.heads * self.head_dim, self.kv_heads * self.head_dim
        inner = self.expert_intermediate * 2 if self.experts else self.intermediate  # top-2 routing, roughly
        layer = 2 * (4 * h + 3 * q + 4 * kv + 5 * inner) + 4 * 2 * h  # bf16 tensors + fp32 norm inputs
        return (self.layers * 2 * h + layer) if checkpointing else self.layers * layer


def _moe_layers(cfg: dict[str, Any], layers: int) -> tuple[int, ...]:
    step = cfg.get("decoder_sparse_step") or 1
    dense = set(cfg.get("mlp_only_layers") or [])
    first_dense = cfg.get("first_k_dense_replace") or 0
    return tuple(i for i in range(layers) if (i + 1) % step == 0 and i not in dense and i >= first_dense)


@dataclass
class Line:
    what: str
    bytes: float
    counts: str  # what the line counts, for people


@dataclass
class MemoryPlan:
    """Per-GPU estimate for a training rank (and the rollout's own GPUs when separate)."""

    gpu_bytes: float | None  # the GPU's memory, when known
    shape: ModelShape
    phases: dict[str, list[Line]] = field(default_factory=dict)
    kv_cache_tokens: int | None = None
    notes: list[str] = field(default_factory=list)

    def peak(self) -> tuple[str, float]:
        name = max(self.phases, key=lambda p: self.total(p))
        return name, self.total(name)

    def total(self, phase: str) -> float:
        return sum(line.bytes for line in self.phases[phase])

    def fits(self) -> bool | None:
        return None if self.gpu_bytes is None else self.peak()[1] <= self.gpu_bytes

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"peak": dict(zip(("phase", "bytes"), self.peak(), strict=True))}


def estimate(config: Any, shape: ModelShape, gpu_bytes: float | None) -> MemoryPlan:
    """The per-GPU estimate of a resolved config (an `RLCConfig`) for a model of `shape`."""
    arf = config.actor_rollout_ref
    plan = MemoryPlan(gpu_bytes, shape)
    resident = [Line("CUDA context", CUDA_CONTEXT, "context, cuBLAS and NCCL buffers outside torch's allocator"),
                *_resident_state(config, shape)]
    if arf.hybrid_engine and substituted(arf.rollout, "name") == "vllm":
        pool = _vllm_pool(config, shape, gpu_bytes, plan)
        plan.phases["rollout"] = resident + pool
        asleep = arf.rollout.enable_sleep_mode and arf.rollout.free_cache_engine  # else vLLM stays awake throughout
        resident = resident + ([Line("vLLM asleep", VLLM_ASLEEP, "CUDA graphs and buffers a sleeping vLLM keeps")]
                               if asleep else pool)
    elif arf.rollout.share_trainer_gpu:  # the rollout's process stays awake beside the trainer, in every phase
        pool = _vllm_pool(config, shape, gpu_bytes, plan) if substituted(arf.rollout, "name") == "vllm" else [
            Line("HF rollout model", shape.parameters() * 2, "bf16 weights of the generating copy")]
        resident = resident + pool + [Line("weight buffers", shape.parameters() * 4,
                                           "the fp32 weights in buckets, read by the rollout through CUDA IPC")]
        plan.phases["rollout"] = resident
    micro = arf.rollout.log_prob_micro_batch_size_per_gpu or arf.actor.ppo_micro_batch_size_per_gpu
    plan.phases["log_prob"] = resident + _brought_back(config, shape, training=False) + _with_slack(
        [_logits(config, shape, micro, LOGIT_COPIES_NO_GRAD, "log-prob logits")])
    plan.phases["update"] = resident + _brought_back(config, shape, training=True) + _with_slack(
        _update_transients(config, shape))
    # torch's allocator keeps the log-prob phase's blocks cached: the update never holds less than it did
    cached = plan.total("log_prob") - plan.total("update")
    if cached > 0:
        plan.phases["update"].append(Line("log-prob blocks kept", cached,
                                          "torch's cache still holds the larger log-prob phase"))
    return plan


def _with_slack(transients: list[Line]) -> list[Line]:
    slack = ALLOCATOR_SLACK * sum(line.bytes for line in transients)
    return transients + [Line("allocator slack", slack, f"{ALLOCATOR_SLACK:.0%} of the above: torch's cache")]


def _resident_state(config: Any, shape: ModelShape) -> list[Line]:
    """What stays on the GPU between phases: the actor's weights and optimizer, the reference, the critic."""
    from rlc.config.checks import uses_critic, uses_reference

    split, how = _split(config)
    lines = []
    if config.backend == "megatron":
        for line, switch in _megatron_actor_state(config, shape):
            lines.append(Line(line.what, 0.0, f"on the CPU between phases (megatron.{switch})") if switch else line)
    elif _offloaded(config.actor_rollout_ref.actor.fsdp_config):
        lines.append(Line("actor parameters + Adam", 0.0, "on the CPU (fsdp_config.param_offload)"))
    else:
        params, rank = shape.parameters(shards=split), config.actor_rollout_ref.model.lora_rank
        trained = shape.adapter_parameters(rank, split) if rank else params
        lines += [Line("actor parameters", params * 4 + (trained if rank else 0) * 4, f"fp32, {how}"),
                  Line("actor optimizer", trained * 8,
                       f"Adam's two fp32 moments{' of the LoRA adapters only' if rank else ''}, {how}")]
    if uses_reference(config) and config.actor_rollout_ref.model.lora_rank:
        lines.append(Line("reference parameters", 0.0, "none: the actor's frozen base with its adapters off"))
    elif uses_reference(config) and _megatron_offloads(config, "ref", "param_offload"):
        lines.append(Line("reference parameters", 0.0, "on the CPU between its log-prob passes "
                                                       "(megatron.param_offload)"))
    elif uses_reference(config):
        ref = _megatron_parameters(config, shape)[0] if config.backend == "megatron" else shape.parameters(shards=split)
        lines.append(Line("reference parameters", ref * 2, f"bf16, never trained, {how}"))
    if uses_critic(config) and _megatron_offloads(config, "critic", "param_offload", "optimizer_offload"):
        lines.append(Line("critic parameters + Adam", 0.0, "on the CPU between its phases (megatron.param_offload "
                                                           "and optimizer_offload)"))
    elif uses_critic(config):
        critic = shape.parameters("value", shards=split)
        lines.append(Line("critic parameters + Adam", critic * 12, f"fp32 weights and two moments, {how}"))
    return lines


def _megatron_actor_state(config: Any, shape: ModelShape) -> list[tuple[Line, str | None]]:
    """The Megatron actor's state, each with the switch that keeps it on the CPU between phases (or None)."""
    meg = config.actor_rollout_ref.actor.megatron
    _, how = _split(config)
    params, optimized = _megatron_parameters(config, shape)
    grads = "param_offload" if meg.param_offload else "grad_offload" if meg.grad_offload else None
    sharded = ", over the data-parallel ranks (distributed optimizer)" if meg.use_distributed_optimizer else ""
    return [(Line("actor parameters", params * 2, f"bf16, {how}"), "param_offload" if meg.param_offload else None),
            (Line("actor gradient buffer", params * 4, "fp32 main grads, kept between steps (megatron DDP)"), grads),
            (Line("actor optimizer", optimized * 12, f"fp32 master weights and Adam's two moments{sharded}"),
             "optimizer_offload" if meg.optimizer_offload else None)]


def _brought_back(config: Any, shape: ModelShape, training: bool) -> list[Line]:
    """What a phase brings back to the GPU of the state the Megatron engine offloads: the weights for a
    log-prob pass (the actor's or the reference's: one at a time), everything of the actor for its update."""
    from rlc.config.checks import uses_reference

    if config.backend != "megatron":
        return []
    offloaded = [(line, switch) for line, switch in _megatron_actor_state(config, shape) if switch]
    if training:
        return [Line(f"{line.what} (brought back)", line.bytes, f"for the update ({switch})")
                for line, switch in offloaded]
    weights = [line for line, switch in offloaded if line.what == "actor parameters"]
    if not weights and uses_reference(config) and _megatron_offloads(config, "ref", "param_offload"):
        weights = [line for line, _ in _megatron_actor_state(config, shape) if line.what == "actor parameters"]
    return [Line("parameters (brought back)", line.bytes, "for a log-prob pass (param_offload)") for line in weights]


def _megatron_offloads(config: Any, role: str, *switches: str) -> bool:
    if config.backend != "megatron":
        return False
    block = config.critic.megatron if role == "critic" else getattr(config.actor_rollout_ref, role).megatron
    return all(getattr(block, switch) for switch in switches)


def _update_transients(config: Any, shape: ModelShape) -> list[Line]:
    """What the actor's update adds for one micro-batch."""
    arf = config.actor_rollout_ref
    split, how = _split(config)
    lines = []
    if config.backend == "fsdp":
        rank = arf.model.lora_rank
        trained = shape.adapter_parameters(rank, split) if rank else shape.parameters(shards=split)
        grads = 0 if _offloaded(arf.actor.fsdp_config) else trained * 4
        what = f"fp32{' (LoRA adapters only)' if rank else ''}, {how}"
        lines.append(Line("actor gradients", grads, what if grads else "on the CPU (param_offload)"))
        layer = max(sum(math.prod(t) for t in shape.layer_tensors(i)) for i in range(shape.layers))
        lines.append(Line("gathered weights", (2 * layer + shape.vocab * shape.hidden) * 2,
                          "bf16 copies FSDP gathers: two decoder layers and the embeddings"))
    micro = arf.actor.ppo_micro_batch_size_per_gpu or 1
    # Ulysses (fsdp) or context parallelism (megatron): each rank holds 1/sp of every sequence
    sp = arf.actor.ulysses_sequence_parallel_size if config.backend == "fsdp" else \
        arf.actor.megatron.context_parallel_size
    tokens = micro * -(-_sequence_length(config) // sp)
    checkpointing = arf.model.enable_gradient_checkpointing
    activations = tokens * shape.activation_bytes_per_token(checkpointing)
    if config.backend == "megatron":
        activations /= arf.actor.megatron.tensor_model_parallel_size  # sequence parallel splits them
    lines.append(Line("activations", activations, f"{tokens} tokens of the largest micro-batch, "
                      + ("layer inputs (gradient checkpointing)" if checkpointing else "all saved tensors")))
    lines.append(_logits(config, shape, micro, LOGIT_COPIES_UPDATE, "update logits"))
    return lines


def _logits(config: Any, shape: ModelShape, micro: int | None, copies: float, what: str) -> Line:
    positions = (micro or 1) * _response_length(config)
    counts = f"{positions} response positions x {shape.vocab} vocabulary x 4 bytes x {copies} copies"
    if config.backend != "megatron":  # transformers computes the head only where a response token is predicted
        return Line(what, positions * shape.vocab * 4 * copies, counts)
    # megatron's output layer covers every position of the sequence, in bf16, split over tensor parallel ranks. A
    # context-parallel rank holds its 1/cp of the positions, and the response positions among them: as many as
    # all of its positions on the rank that holds the most (the chunks are not split by prompt and response).
    meg = config.actor_rollout_ref.actor.megatron
    tp, cp = meg.tensor_model_parallel_size, meg.context_parallel_size
    local = -(-_sequence_length(config) // cp)
    everywhere = (micro or 1) * local * shape.vocab * 2
    if cp > 1:
        positions = (micro or 1) * min(_response_length(config), local)
        counts = f"{positions} response positions (at most those of one rank's 1/{cp} of the sequence) x " \
                 f"{shape.vocab} vocabulary x 4 bytes x {copies} copies"
    return Line(what, (everywhere + positions * shape.vocab * 4 * copies) / tp,
                f"bf16 logits at {'all' if cp == 1 else f'1/{cp} of the'} positions + {counts}, "
                f"/ tensor parallel {tp}")


def _vllm_pool(config: Any, shape: ModelShape, gpu_bytes: float | None, plan: MemoryPlan) -> list[Line]:
    """vLLM claims `gpu_memory_utilization` of the GPU and keeps for the KV cache what its weights and its
    profiling run (max_num_batched_tokens of activations, max_num_seqs rows of sampler logits) leave."""
    rollout = config.actor_rollout_ref.rollout
    if gpu_bytes is None:
        plan.notes.append("GPU memory unknown (set trainer.gpu_memory_gb): vLLM's pool is not counted")
        return []
    tp = max(1, rollout.tensor_model_parallel_size)
    pool = rollout.gpu_memory_utilization * gpu_bytes
    weights = shape.parameters() * 2 / tp
    activations = rollout.max_num_batched_tokens * shape.hidden * 2 * 8 + rollout.max_num_seqs * shape.vocab * 4 * 2
    kv = max(0.0, pool - weights - activations)
    plan.kv_cache_tokens = int(kv // (shape.kv_bytes_per_token() / tp))
    longest = _sequence_length(config)
    if plan.kv_cache_tokens < longest:
        plan.notes.append(f"vLLM's KV cache holds {plan.kv_cache_tokens} tokens, fewer than one sequence of "
                          f"{longest}: raise rollout.gpu_memory_utilization")
    return [Line("vLLM pool", pool, f"gpu_memory_utilization {rollout.gpu_memory_utilization}: weights "
                 f"{weights / GiB:.1f} GiB, KV cache {kv / GiB:.1f} GiB = {plan.kv_cache_tokens} tokens")]


def _split(config: Any) -> tuple[int, str]:
    """How many ways a model's state is divided on a training rank, and how, in words."""
    if config.backend == "megatron":
        meg = config.actor_rollout_ref.actor.megatron
        tp, pp, ep = meg.tensor_model_parallel_size, meg.pipeline_model_parallel_size, meg.expert_model_parallel_size
        experts = f", experts over expert {ep} x expert-tensor {meg.expert_tensor_parallel_size or tp}" if ep > 1 \
            else ""
        return tp * pp, f"split tensor {tp} x pipeline {pp}{experts}"
    world = n_gpus(config)
    return world, f"FSDP shard 1/{world}"


def _megatron_parameters(config: Any, shape: ModelShape) -> tuple[float, float]:
    """Parameters one megatron rank holds, and those its (distributed) optimizer keeps: the dense part split over
    tensor x pipeline and sharded over the data-parallel ranks, the routed experts over expert x expert-tensor x
    pipeline and sharded over the expert-data-parallel ranks (megatron's expert parallelism)."""
    meg, world = config.actor_rollout_ref.actor.megatron, n_gpus(config)
    tp, pp = meg.tensor_model_parallel_size, meg.pipeline_model_parallel_size
    expert_split = meg.expert_model_parallel_size * (meg.expert_tensor_parallel_size or tp) * pp
    experts = shape.expert_parameters()
    dense, routed = (shape.parameters() - experts) / (tp * pp), experts / expert_split
    if not meg.use_distributed_optimizer:
        return dense + routed, dense + routed
    return dense + routed, dense / max(1, world // (tp * pp)) + routed / max(1, world // expert_split)


def _offloaded(fsdp: Any) -> bool:
    return bool(fsdp.param_offload or fsdp.offload_policy)


def _sequence_length(config: Any) -> int:
    return config.data.max_prompt_length + _response_length(config)


def _response_length(config: Any) -> int:
    return config.actor_rollout_ref.rollout.response_length or config.data.max_response_length


# where the numbers come from -----------------------------------------------------------------------------------
def read_model_config(path: str, revision: str | None = None) -> dict[str, Any] | None:
    """config.json from a local folder, or from the local Hugging Face cache for a Hub id; never the network."""
    local = Path(path).expanduser()
    candidate = local / "config.json" if local.is_dir() else _cached_config(path, revision)
    if candidate is None or not candidate.is_file():
        return None
    try:
        return json.loads(candidate.read_text())
    except (OSError, ValueError):
        return None


def _cached_config(repo_id: str, revision: str | None) -> Path | None:
    cache = os.environ.get("HF_HUB_CACHE") or os.path.join(
        os.environ.get("HF_HOME", os.path.expanduser("~/.cache/huggingface")), "hub")
    folder = Path(cache) / ("models--" + repo_id.replace("/", "--"))
    sha = cached_sha(folder, revision or "main")
    return folder / "snapshots" / sha / "config.json" if sha else None


@functools.cache  # validation and launch both ask; nvidia-smi takes a moment
def detect_gpu_bytes() -> float | None:
    """The first GPU's memory from nvidia-smi, when this machine has one (the launch host usually does)."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10, check=True).stdout
        return float(out.split()[0]) * 2**20
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def render(plan: MemoryPlan) -> str:
    """The estimate as a table, one block per phase, the peak and the verdict last."""
    lines = []
    for phase, rows in plan.phases.items():
        lines.append(f"memory    {phase}: {plan.total(phase) / GiB:.1f} GiB")
        lines += [f"  {row.what:<26}{row.bytes / GiB:>8.2f} GiB  {row.counts}" for row in rows if row.bytes]
    phase, peak = plan.peak()
    gpu = f" of {plan.gpu_bytes / GiB:.0f} GiB" if plan.gpu_bytes else ""
    verdict = {True: "fits", False: "DOES NOT FIT", None: "GPU memory unknown"}[plan.fits()]
    lines.append(f"memory    peak {peak / GiB:.1f} GiB{gpu} in {phase}: {verdict}")
    return "\n".join(lines + [f"memory    note: {note}" for note in plan.notes])


# verdicts ------------------------------------------------------------------------------------------------------
def plan_memory(config: Any) -> MemoryPlan | None:
    """The estimate of a resolved config on its GPUs; None off the GPU or when the model's config.json is not
    on this machine (a Hub id that is not cached). Raises UnknownShape for a config.json it cannot read a shape
    from."""
    if config.trainer.device != "cuda":
        return None
    model = config.actor_rollout_ref.model
    found = read_model_config(model.path, model.revision)
    if found is None:
        return None
    gpu_gb = config.trainer.gpu_memory_gb
    return estimate(config, ModelShape.from_config(found), gpu_gb * GiB if gpu_gb else detect_gpu_bytes())


# Knobs that lower the peak, most of them free of cost to the result, in the order a user would try them:
# (key path, the value to try as a function of the current one, when it applies).
def _fixes(config: Any) -> list[tuple[str, Any]]:
    arf = config.actor_rollout_ref
    fixes: list[tuple[str, Any]] = []
    micro = arf.actor.ppo_micro_batch_size_per_gpu or 1
    # a divisor of a micro-batch that divides the mini-batch divides it too
    smaller = [d for d in range(micro - 1, 0, -1) if micro % d == 0]
    for value in dict.fromkeys(smaller[:2] + smaller[-1:]):
        fixes.append(("actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu", value))
    log_micro = arf.rollout.log_prob_micro_batch_size_per_gpu
    if log_micro and log_micro > 1:
        fixes.append(("actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu", max(1, log_micro // 4)))
    if not arf.model.enable_gradient_checkpointing:
        fixes.append(("actor_rollout_ref.model.enable_gradient_checkpointing", True))
    if substituted(arf.rollout, "name") == "vllm":
        for fraction in (0.3, 0.2):
            if fraction < arf.rollout.gpu_memory_utilization:
                fixes.append(("actor_rollout_ref.rollout.gpu_memory_utilization", fraction))
    if config.backend == "fsdp" and not _offloaded(arf.actor.fsdp_config):
        fixes.append(("actor_rollout_ref.actor.fsdp_config.param_offload", True))
    if config.backend == "megatron" and not arf.actor.megatron.param_offload:
        fixes.append(("actor_rollout_ref.actor.megatron.param_offload", True))
    if config.backend == "megatron":
        tp = arf.actor.megatron.tensor_model_parallel_size
        if tp * 2 <= config.trainer.n_gpus_per_node:
            fixes.append(("actor_rollout_ref.actor.megatron.tensor_model_parallel_size", tp * 2))
        if n_gpus(config) % (2 * megatron_model_parallel(arf.actor.megatron)) == 0:  # long sequences
            fixes.append(("actor_rollout_ref.actor.megatron.context_parallel_size",
                          arf.actor.megatron.context_parallel_size * 2))
    return fixes


def fitting_changes(config: Any, shape: ModelShape, gpu_bytes: float, limit: int = 3) -> list[tuple[str, float]]:
    """Up to `limit` single changes (`key=value`, one per key) after which the estimate fits with headroom, with
    the new peak."""
    found: dict[str, tuple[str, float]] = {}
    for key, value in _fixes(config):
        if key in found:
            continue
        changed = config.model_copy(deep=True)
        *parents, leaf = key.split(".")
        target = changed
        for part in parents:
            target = getattr(target, part)
        setattr(target, leaf, value)
        new = estimate(changed, shape, gpu_bytes)
        if new.peak()[1] <= HEADROOM * gpu_bytes:
            shown = str(value).lower() if isinstance(value, bool) else value
            found[key] = (f"{key}={shown}", new.peak()[1])
        if len(found) == limit:
            break
    return list(found.values())


def verdict(config: Any, plan: MemoryPlan | None, severity: str = "warning") -> list[Diagnostic]:
    """One diagnostic when the estimate exceeds the GPU, naming changes that would fit."""
    if plan is None or plan.fits() is not False:
        return []
    phase, peak = plan.peak()
    changes = fitting_changes(config, plan.shape, plan.gpu_bytes or 0.0)
    hint = ("would fit: " + "; ".join(f"--set {change} ({new / GiB:.1f} GiB)" for change, new in changes)
            if changes else "no single change fits: use more GPUs, tensor parallelism or a smaller model")
    if severity == "error":
        hint += "; or pass --force to launch anyway"
    return [Diagnostic(f"estimated peak memory {peak / GiB:.1f} GiB per GPU ({phase}) exceeds the GPU's "
                       f"{(plan.gpu_bytes or 0) / GiB:.1f} GiB", severity=severity, hint=hint,
                       code="memory")]
