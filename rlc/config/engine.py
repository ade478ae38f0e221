"""Training-engine options shared by actor, ref and critic: optimizer, FSDP and Megatron blocks, checkpoints,
profiler and router replay (verl's names and defaults; each key's status is on the key, see `base`)."""

from typing import Any, Literal

from pydantic import Field

from rlc.config.base import PROFILING, Section, instead, partly, refused

ULYSSES = ("rlc implements Ulysses sequence parallelism under the FSDP engine's own keys "
           "(actor_rollout_ref.actor/ref.ulysses_sequence_parallel_size, critic.ulysses_sequence_parallel_size), not "
           "here; set it to 1")
MEGATRON_SCHEDULE = ("rlc's Megatron engine uses the same schedule as FSDP: lr_scheduler_type, lr_warmup_steps "
                     "(_ratio) and min_lr_ratio")
PRECISION_AWARE = "rlc keeps megatron's defaults: fp32 gradients, master weights and Adam moments"
MUON = "used only by the Muon optimizer, which rlc does not implement (rlc runs AdamW)"
NO_PADDING_BUCKETS = "rlc pads each micro-batch to its own longest sequence (or packs it without padding)"
QAT = "quantization-aware training is not implemented in rlc"
SINGLE_DTYPE = ("rlc keeps trainable weights in fp32 and the reference in bf16 on GPUs; mixed_precision sets the "
                "compute dtypes")


PRECISION_AWARE_DTYPES = ("main_grads_dtype", "main_params_dtype", "exp_avg_dtype", "exp_avg_sq_dtype")
"""megatron-core's dtypes of the precision-aware optimizer's gradients, master weights and moments: fp32 unless
use_precision_aware_optimizer is on (megatron asserts it)."""

DTYPE_NAMES = {"fp32": "float32", "float32": "float32", "bf16": "bfloat16", "bfloat16": "bfloat16",
               "fp16": "float16", "float16": "float16"}
"""The names those dtypes take in YAML (verl's spellings), as torch attribute names: verl passes the YAML string on
to megatron, which compares it with torch dtypes; rlc passes the dtype."""

MEGATRON_OPTIMIZER_OVERRIDES = {"eps": "adam_eps", "optimizer_cpu_offload": "optimizer_cpu_offload",
                                "optimizer_offload_fraction": "optimizer_offload_fraction",
                                "overlap_cpu_optimizer_d2h_h2d": "overlap_cpu_optimizer_d2h_h2d",
                                "use_precision_aware_optimizer": "use_precision_aware_optimizer",
                                **{key: key for key in PRECISION_AWARE_DTYPES}}
"""`optim.override_optimizer_config` keys the Megatron engine passes to megatron-core's `OptimizerConfig`, and the
field each sets: torch AdamW's `eps` is megatron's `adam_eps`; the others are megatron's own names, as verl passes
them (`optimizer_cpu_offload` runs the step on the CPU with megatron's HybridDeviceOptimizer;
`use_precision_aware_optimizer` and its dtypes only where Transformer Engine is importable, and there only beside
it; elsewhere the engine leaves them out with PRECISION_AWARE_WITHOUT_TE's warning)."""

PRECISION_AWARE_WITHOUT_TE = (
    "use_precision_aware_optimizer needs Transformer Engine (megatron-core reads its version), which is not "
    "installed here: where it is missing, rlc runs megatron's standard optimizer instead, with fp32 master weights "
    "and fp32 Adam moments (the same update up to rounding, more optimizer memory; the memory plan counts it)")
"""What rlc does with `override_optimizer_config.use_precision_aware_optimizer` where Transformer Engine is missing:
the compiler warns with it and the Megatron engine leaves the flag (and PRECISION_AWARE_DTYPES) out of megatron's
`OptimizerConfig`."""

MEGATRON_PER_ROLE = ("use_dist_checkpointing", "dist_checkpointing_path", "dist_checkpointing_prefix", "param_offload",
                     "grad_offload", "optimizer_offload")
"""Keys of a `megatron` block that each role (actor, ref, critic) reads from its own block, as verl does; the
others are the actor's layout, shared by every role."""

VERL_TRANSFORMER_OVERRIDES = {"recompute_granularity": None, "recompute_modules": ["core_attn"],
                              "recompute_method": None, "recompute_num_layers": None, "attention_backend": "flash"}
"""verl's default `override_transformer_config`; a config that keeps it earns no warning."""


class Optim(Section):
    """The AdamW optimizer and its learning-rate schedule."""

    optimizer: Literal["AdamW", "adamw", "adam"] = "AdamW"
    """Optimizer: AdamW (FSDP) or adam (Megatron's name of the same decoupled-weight-decay Adam)."""
    optimizer_impl: str = instead("torch.optim", "rlc always uses torch.optim.AdamW")
    """Module to import the optimizer class from."""
    lr: float = Field(1e-6, gt=0)
    """Peak learning rate."""
    lr_warmup_steps_ratio: float = Field(0.0, ge=0, le=1)
    """Warmup length as a fraction of the total steps (used when lr_warmup_steps is not positive)."""
    lr_warmup_steps: int = -1
    """Warmup length in optimizer steps; -1 uses lr_warmup_steps_ratio."""
    total_training_steps: int = -1
    """Steps the schedule spans; -1: filled in by the trainer from the data set size and epochs."""
    weight_decay: float = Field(0.01, ge=0)
    """AdamW decoupled weight decay."""
    betas: list[float] = Field([0.9, 0.999], min_length=2, max_length=2)  # a list, as YAML gives it (strict checks)
    """AdamW beta1 and beta2."""
    clip_grad: float = instead(1.0, "rlc clips gradients by the section's grad_clip (actor.grad_clip, "
                                    "critic.grad_clip)", gt=0)
    """Gradient-norm clip of verl's newer engine path."""
    min_lr_ratio: float = Field(0.0, ge=0, le=1)
    """Floor of cosine and linear decay, as a fraction of lr."""
    num_cycles: float = 0.5
    """Cosine cycles over the decay (0.5: one half-cosine down to min_lr_ratio)."""
    lr_scheduler_type: Literal["constant", "cosine", "linear"] = "constant"
    """Shape of the schedule after warmup."""
    warmup_style: Literal["constant", "cosine", "linear"] | None = None
    """Deprecated verl name of lr_scheduler_type; copied into it when that is not set."""
    zero_indexed_step: bool = instead(True, "rlc counts scheduler steps from 0 (verl's default)")
    """Whether the scheduler's first step is step 0."""
    override_optimizer_config: dict[str, Any] | None = None
    """Extra keyword arguments passed to the optimizer's constructor (Megatron: `eps` and megatron-core's CPU
    optimizer fields optimizer_cpu_offload, optimizer_offload_fraction, overlap_cpu_optimizer_d2h_h2d,
    use_precision_aware_optimizer and its main_grads_dtype, main_params_dtype, exp_avg_dtype, exp_avg_sq_dtype)."""
    lr_warmup_init: float = instead(0.0, MEGATRON_SCHEDULE)
    """Megatron: learning rate at the start of warmup."""
    lr_decay_steps: int | None = instead(None, MEGATRON_SCHEDULE)
    """Megatron: steps over which the learning rate decays."""
    lr_decay_style: str = instead("constant", MEGATRON_SCHEDULE)
    """Megatron: decay shape (constant, linear, cosine, inverse-square-root, WSD)."""
    min_lr: float = instead(0.0, MEGATRON_SCHEDULE)
    """Megatron: absolute floor of the learning rate."""
    weight_decay_incr_style: str = instead("constant", "rlc keeps weight_decay constant")
    """Megatron: how weight decay changes over training."""
    lr_wsd_decay_style: str = instead("exponential", MEGATRON_SCHEDULE)
    """Megatron: decay shape of the warmup-stable-decay schedule."""
    lr_wsd_decay_steps: int | None = instead(None, MEGATRON_SCHEDULE)
    """Megatron: length of the WSD schedule's decay phase."""
    use_precision_aware_optimizer: bool = refused(
        False, "rlc reads it where verl does, from override_optimizer_config")
    """Megatron: keep gradients and Adam moments in lower precision (bf16 training)."""
    main_grads_dtype: str = instead("fp32", PRECISION_AWARE, only_with=".use_precision_aware_optimizer")
    """Megatron: dtype of the gradient-accumulation buffer with the precision-aware optimizer."""
    exp_avg_dtype: str = instead("fp32", PRECISION_AWARE, only_with=".use_precision_aware_optimizer")
    """Megatron: dtype of Adam's first moment with the precision-aware optimizer."""
    exp_avg_sq_dtype: str = instead("fp32", PRECISION_AWARE, only_with=".use_precision_aware_optimizer")
    """Megatron: dtype of Adam's second moment with the precision-aware optimizer."""
    use_layer_wise_distributed_optimizer: bool = instead(False, MUON)
    """Megatron Muon: shard the optimizer layer by layer."""
    muon_momentum: float = instead(0.95, MUON)
    """Muon: momentum."""
    muon_nesterov: bool = instead(False, MUON)
    """Muon: Nesterov momentum."""
    muon_num_ns_steps: int = instead(5, MUON)
    """Muon: Newton-Schulz iterations."""
    muon_coefficient_type: str = instead("quintic", MUON)
    """Muon: Newton-Schulz coefficients."""
    muon_scale_mode: str = instead("spectral", MUON)
    """Muon: update scaling."""
    muon_extra_scale_factor: float = instead(1.0, MUON)
    """Muon: extra update scale."""
    muon_fp32_matmul_prec: str = instead("medium", MUON)
    """Muon: fp32 matmul precision."""
    muon_match_adamw_update_rms: bool = instead(False, MUON)
    """Muon: scale updates to AdamW's RMS."""
    muon_split_qkv: bool = instead(True, MUON)
    """Muon: orthogonalise q, k and v separately."""
    muon_tp_mode: str = instead("blockwise", MUON)
    """Muon: tensor-parallel handling."""
    muon_scalar_optimizer: str = instead("adam", MUON)
    """Muon: optimizer of scalar and vector parameters."""
    use_checkpoint_opt_param_scheduler: bool = instead(
        False, "rlc restores the scheduler's step from the checkpoint and takes its settings from this config")
    """Megatron: take the scheduler settings from the checkpoint instead of the config."""


class WrapPolicy(Section):
    """Which modules FSDP shards as units."""

    min_num_params: int = instead(0, "rlc shards each decoder layer, then the whole model (FSDP2 fully_shard)")
    """Shard any module with at least this many parameters (0: by layer class)."""
    transformer_layer_cls_to_wrap: list[str] | None = instead(
        None, "rlc shards each decoder layer, then the whole model (FSDP2 fully_shard)")
    """Layer class names to shard as units (default: the model's decoder layer)."""


class Qat(Section):
    """Quantization-aware training."""

    enable: bool = refused(False, QAT)
    """Train with fake-quantized weights."""
    mode: str = instead("w4a16", QAT, only_with=".enable")
    """Quantization scheme (w4a16: NVFP4 weights)."""
    group_size: int = instead(16, QAT, only_with=".enable")
    """Weights per quantization group."""
    ignore_patterns: list[str] = instead([], QAT, only_with=".enable")
    """Modules left unquantized."""
    activation_observer: str | None = instead(None, QAT, only_with=".enable")
    """Activation observer."""
    quantization_config_path: str | None = instead(None, QAT, only_with=".enable")
    """vLLM quantization config for the rollout."""


class FSDPConfig(Section):
    """Sharding of one model with FSDP (rlc always uses FSDP2, torch's fully_shard)."""

    wrap_policy: WrapPolicy = WrapPolicy()
    """Which modules are sharded as units."""
    param_offload: bool = False
    """Keep parameters (and gradients, optimizer state) in CPU memory between uses (FSDP2 CPUOffloadPolicy)."""
    optimizer_offload: bool = False
    """Keep the optimizer state in CPU memory between steps (moved to the GPU for each step)."""
    offload_policy: bool = False
    """FSDP2's CPU offload policy (same effect as param_offload in rlc)."""
    reshard_after_forward: bool = True
    """Free gathered parameters after the forward pass (less memory, one more all-gather in backward)."""
    fsdp_size: int = instead(-1, "rlc shards over all ranks of the group (no hybrid sharding)")
    """Ranks per FSDP group for hybrid sharding; -1: all ranks."""
    forward_prefetch: bool = instead(False, "rlc uses FSDP2's default prefetching")
    """Prefetch the next all-gather during the forward pass."""
    model_dtype: Literal["fp32", "bf16", "fp16", "float32", "bfloat16"] = instead("fp32", SINGLE_DTYPE)
    """Dtype the model is loaded in before sharding."""
    dtype: Literal["bfloat16", "float16", "float32"] = instead("bfloat16", SINGLE_DTYPE)
    """Compute dtype of verl's newer engine path."""
    mixed_precision: dict[str, Any] | None = None
    """FSDP mixed precision: param_dtype and reduce_dtype (default bfloat16 and float32) on GPUs."""
    use_orig_params: bool = instead(False, "FSDP2 always keeps the original parameters")
    """FSDP1's use_orig_params."""
    seed: int = instead(42, "rlc seeds every rank from trainer.seed")
    """Random seed of the engine."""
    full_determinism: bool = refused(False, "deterministic kernels are not switched on by rlc")
    """Force deterministic algorithms (slower)."""
    strategy: Literal["fsdp", "fsdp2", "fsdp_turbo"] = partly(
        "fsdp", ("fsdp", "fsdp2"), "verl's turbo FSDP engine is not implemented in rlc (rlc shards with FSDP2)")
    """FSDP version: fsdp, fsdp2 (rlc runs FSDP2 for both) or fsdp_turbo."""
    use_torch_compile: bool = instead(True, "rlc does not torch.compile the model")
    """Compile the model's forward with torch.compile."""
    ulysses_sequence_parallel_size: int = refused(1, ULYSSES, ge=1)
    """Ulysses sequence-parallel group size of verl's newer engine path."""
    entropy_from_logits_with_chunking: bool = instead(False, "rlc computes the entropy over the whole logits")
    """Compute the entropy in chunks to save memory."""
    entropy_checkpointing: bool = instead(False, "rlc does not recompute the entropy in backward")
    """Recompute the entropy in the backward pass instead of storing it."""
    forward_only: bool = instead(False, "rlc knows from the role (ref, actor, critic) whether a model trains")
    """The model only runs forward passes (set by verl for the reference)."""
    entropy_from_logits_chunk_size: int = instead(2048, "rlc computes the entropy over the whole logits",
                                                  only_with=".entropy_from_logits_with_chunking")
    """Chunk size of the chunked entropy."""
    pad_to_length: bool = instead(False, NO_PADDING_BUCKETS)
    """Round each packed micro-batch up to a multiple of pad_to_length_bucket tokens (fewer kernel shapes)."""
    pad_to_length_bucket: int = instead(1024, NO_PADDING_BUCKETS, only_with=".pad_to_length")
    """Bucket of pad_to_length, in tokens."""
    use_no_sync_for_gradient_accumulation: bool = instead(
        False, "rlc lets FSDP2 reduce gradients after each micro-batch")
    """Defer gradient reduction to the last micro-batch (less communication, more memory)."""
    qat: Qat = Qat()
    """Quantization-aware training."""
    turbo_config: dict[str, Any] | None = instead(None, "verl's turbo FSDP engine is not implemented in rlc",
                                                  only_with=".strategy==fsdp_turbo")
    """Options of verl's turbo FSDP engine (its own tensor, expert and Ulysses sizes)."""


class RouterReplay(Section):
    """MoE router replay: record the rollout's expert routing and replay it in training."""

    mode: Literal["disabled", "R2", "R3"] = refused(
        "disabled", "MoE router replay is not implemented in rlc")
    """disabled, or how routing decisions are recorded and replayed."""
    record_file: str | None = refused(None, "MoE router replay is not implemented in rlc")
    """Where recorded routing goes."""
    replay_file: str | None = refused(None, "MoE router replay is not implemented in rlc")
    """Recorded routing to replay."""


class MegatronConfig(Section):
    """verl's `*.megatron` block: Megatron-Core parallelism and options; valid only with `backend: megatron`."""

    tensor_model_parallel_size: int = Field(1, ge=1)
    """Tensor-parallel ranks per model replica."""
    pipeline_model_parallel_size: int = Field(1, ge=1)
    """Pipeline stages per model replica."""
    virtual_pipeline_model_parallel_size: int | None = instead(
        None, "rlc runs Megatron's plain (non-interleaved) pipeline schedule: the same updates, a larger pipeline "
              "bubble", also_fine=(1,))
    """Model chunks per pipeline stage for the interleaved schedule."""
    context_parallel_size: int = Field(1, ge=1)
    """Ranks that split each sequence (Megatron context parallelism: each takes two of 2 x cp chunks, keys and
    values are all-gathered in attention); the data-parallel size is GPUs / (tensor x pipeline x context)."""
    expert_model_parallel_size: int = Field(1, ge=1)
    """Ranks that split the experts of MoE layers (carved out of the data-parallel ranks, as in Megatron)."""
    expert_tensor_parallel_size: int | None = Field(None, ge=1)
    """Tensor-parallel size inside each expert (default: tensor_model_parallel_size)."""
    sequence_parallel: bool = True
    """Megatron sequence parallelism of norms and dropouts (used when tensor parallel > 1)."""
    use_distributed_optimizer: bool = True
    """Shard the optimizer state over data-parallel ranks."""
    use_dist_checkpointing: bool = False
    """Load the initial weights from the Megatron dist checkpoint at dist_checkpointing_path instead of the Hugging
    Face weights at model.path (whose config.json still gives the model's shape); the critic keeps its value head
    from model.path."""
    dist_checkpointing_path: str | None = None
    """Where that dist checkpoint is: its directory (with metadata.json), or an rlc/verl checkpoint directory that
    holds it as dist_ckpt/."""
    dist_checkpointing_prefix: str = ""
    """Key prefix of the model's tensors inside that dist checkpoint."""
    param_offload: bool = False
    """Keep this role's parameters (and gradient buffers) in CPU memory between the phases that use them."""
    grad_offload: bool = False
    """Free this role's gradient buffers between updates (they are zero then; verl reads but ignores this key)."""
    optimizer_offload: bool = False
    """Keep this role's fp32 master weights and Adam moments in CPU memory between updates."""
    seed: int = 42
    """Seed of Megatron's model-parallel random state."""
    params_dtype: Literal["bfloat16", "float16", "float32"] = "bfloat16"
    """Parameter and compute dtype on GPUs."""
    dtype: Literal["bfloat16", "float16", "float32"] = instead("bfloat16", "rlc's Megatron engine takes its dtype "
                                                                           "from params_dtype")
    """verl's name of the Megatron compute dtype."""
    override_ddp_config: dict[str, Any] = instead({}, "rlc builds Megatron's DistributedDataParallelConfig itself")
    """Fields of Megatron's DistributedDataParallelConfig to override."""
    override_transformer_config: dict[str, Any] = instead(
        VERL_TRANSFORMER_OVERRIDES,
        "rlc builds Megatron's TransformerConfig from the Hugging Face config; recompute and attention options here "
        "are not applied (rlc recomputes whole layers when model.enable_gradient_checkpointing)")
    """Fields of Megatron's TransformerConfig to override (recompute_*, attention_backend, ...)."""
    override_mcore_model_config: dict[str, Any] = instead(
        {}, "rlc builds the Megatron model from the Hugging Face config")
    """Fields of the Megatron model config to override."""
    use_mbridge: bool = instead(True, "rlc converts Hugging Face weights with its own converter (no mbridge)")
    """Convert Hugging Face weights with mbridge."""
    vanilla_mbridge: bool = instead(False, "rlc converts Hugging Face weights with its own converter (no mbridge)")
    """Use mbridge's vanilla bridge."""
    use_remove_padding: bool = instead(True, "rlc's Megatron engine follows model.use_remove_padding")
    """Pack sequences without padding."""
    forward_only: bool = instead(False, "rlc knows from the role (ref, actor, critic) whether a model trains")
    """The model only runs forward passes (set by verl for the reference)."""
    dist_ckpt_optim_fully_reshardable: bool = instead(False, "rlc resumes with the same parallel layout only")
    """Save the optimizer so that it reloads under any TP/PP/EP/DP layout."""
    distrib_optim_fully_reshardable_mem_efficient: bool = instead(
        False, "rlc resumes with the same parallel layout only", only_with=".dist_ckpt_optim_fully_reshardable")
    """Save and load that checkpoint with as little memory as possible (through Gloo)."""
    dynamic_context_parallel: bool = refused(
        False, "dynamic context parallelism is not implemented in rlc; context_parallel_size is fixed")
    """Schedule context parallelism per batch."""
    max_seqlen_per_dp_cp_rank: int | None = instead(None, "dynamic context parallelism is not implemented in rlc",
                                                    only_with=".dynamic_context_parallel")
    """Longest packed sequence per DPxCP rank with dynamic context parallelism."""
    entropy_from_logits_with_chunking: bool = instead(False, "rlc computes the entropy over the whole logits")
    """Compute the entropy in chunks to save memory."""
    entropy_from_logits_chunk_size: int = instead(2048, "rlc computes the entropy over the whole logits",
                                                  only_with=".entropy_from_logits_with_chunking")
    """Chunk size of the chunked entropy."""
    pad_to_length: bool = instead(False, NO_PADDING_BUCKETS)
    """Round each packed micro-batch up to a multiple of pad_to_length_bucket tokens."""
    pad_to_length_bucket: int = instead(1024, NO_PADDING_BUCKETS, only_with=".pad_to_length")
    """Bucket of pad_to_length, in tokens."""
    pad_bshd_to_minibatch_max: bool = instead(True, NO_PADDING_BUCKETS)
    """Padded path: pad every micro-batch to the mini-batch's longest sequence."""
    use_megatron_fsdp: bool = refused(False, "Megatron-FSDP is not implemented in rlc")
    """Shard parameters with Megatron-FSDP (ZeRO-3)."""
    qat: Qat = Qat()
    """Quantization-aware training."""
    router_replay: RouterReplay | None = None
    """MoE router replay of the Megatron engine."""


class Checkpoint(Section):
    """What a checkpoint holds."""

    save_contents: list[Literal["model", "optimizer", "extra", "hf_model"]] = instead(
        ["model", "optimizer", "extra"], "rlc always saves the model, optimizer and trainer state, and exports the "
                                         "Hugging Face model when hf_upload is on")
    """Parts written at each save: model, optimizer, extra (rng, scheduler), hf_model."""
    load_contents: list[Literal["model", "optimizer", "extra", "hf_model"]] | None = instead(
        None, "rlc always resumes model, optimizer and trainer state together", same_as=".save_contents")
    """Parts read on resume (default: save_contents)."""
    async_save: bool = instead(False, "rlc saves synchronously")
    """Save checkpoints in the background."""
    strict: bool = instead(True, "rlc's weight export always checks every tensor")
    """Validate strictly when exporting weights."""
    mbridge_config: dict[str, Any] = instead({}, "rlc saves checkpoints without mbridge")
    """mbridge checkpoint options (distributed_filesystem, memory_efficient)."""


class Profiler(Section):
    """A role's profiler (verl's `profiler` block of actor, ref, rollout, critic, reward model)."""

    tool: str | None = instead(None, PROFILING, only_with=".enable")
    """Profiler to run: nsys, npu, torch or torch_memory."""
    enable: bool = instead(False, PROFILING)
    """Profile this role."""
    all_ranks: bool = instead(False, PROFILING, only_with=".enable")
    """Profile every rank."""
    ranks: list[int] = instead([], PROFILING, only_with=".enable")
    """Ranks to profile."""
    save_path: str | None = instead(None, PROFILING, only_with=".enable")
    """Where traces go."""
    tool_config: dict[str, Any] | None = instead(None, PROFILING, only_with=".enable")
    """Per-tool options (nsys, npu, torch, torch_memory, precision_debugger)."""
    finish_hook_cmd: str | None = instead(None, PROFILING, only_with=".enable")
    """Shell command run after traces are written (to ship them somewhere)."""
    finish_hook_ranks: list[int] | None = instead(None, PROFILING, only_with=".enable")
    """Ranks that run finish_hook_cmd."""
    finish_hook_all_ranks: bool | None = instead(None, PROFILING, only_with=".enable")
    """Every rank runs finish_hook_cmd."""
    relocate_results: bool | None = instead(None, PROFILING, only_with=".enable")
    """Move Ray's Nsight output into save_path."""


class GlobalProfiler(Section):
    """verl's `global_profiler`: which steps to profile, with which tool."""

    tool: str | None = instead(None, PROFILING, only_with=".steps")
    """Profiler to run: nsys, npu, torch or torch_memory."""
    steps: list[int] | None = instead(None, PROFILING)
    """Training steps to profile."""
    profile_continuous_steps: bool = instead(False, PROFILING, only_with=".steps")
    """Merge consecutive profiled steps into one trace."""
    save_path: str = instead("outputs/profile", PROFILING, only_with=".steps")
    """Where traces go."""
    finish_hook_cmd: str | None = instead(None, PROFILING, only_with=".steps")
    """Shell command run after traces are written."""
    finish_hook_ranks: list[int] = instead([], PROFILING, only_with=".steps")
    """Ranks that run finish_hook_cmd."""
    finish_hook_all_ranks: bool = instead(False, PROFILING, only_with=".steps")
    """Every rank runs finish_hook_cmd."""
    relocate_results: bool = instead(False, PROFILING, only_with=".steps")
    """Move Ray's Nsight output into save_path."""
    global_tool_config: dict[str, Any] = instead({}, PROFILING, only_with=".steps")
    """Per-tool options of the controller and workers (nsys, torch_memory)."""
