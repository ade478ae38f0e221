"""Training-engine options shared by actor, ref and critic: optimizer, FSDP and Megatron blocks, checkpoints,
profiler and router replay (verl's names and defaults; each key's status is on the key, see `base`)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from rlc.config.base import PROFILING, Section, instead, refused

ULYSSES = ("Ulysses sequence parallelism is not implemented in rlc yet: each GPU holds whole sequences (verl "
           "divides the data-parallel size by this; set it to 1)")
MEGATRON_SCHEDULE = ("rlc's Megatron engine uses the same schedule as FSDP: lr_scheduler_type, lr_warmup_steps "
                     "(_ratio) and min_lr_ratio")
SINGLE_DTYPE = ("rlc keeps trainable weights in fp32 and the reference in bf16 on GPUs; mixed_precision sets the "
                "compute dtypes")


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
    betas: tuple[float, float] = (0.9, 0.999)
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
    """Extra keyword arguments passed to the optimizer's constructor."""
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


class FSDPConfig(Section):
    """Sharding of one model with FSDP (rlc always uses FSDP2, torch's fully_shard)."""

    wrap_policy: WrapPolicy = WrapPolicy()
    """Which modules are sharded as units."""
    param_offload: bool = False
    """Keep parameters (and gradients, optimizer state) in CPU memory between uses (FSDP2 CPUOffloadPolicy)."""
    optimizer_offload: bool = instead(False, "rlc offloads the optimizer state only together with the parameters: "
                                             "set param_offload")
    """Keep the optimizer state in CPU memory."""
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
    strategy: Literal["fsdp", "fsdp2"] = instead("fsdp", "rlc always shards with FSDP2 (fully_shard)")
    """FSDP version."""
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


class MegatronConfig(Section):
    """verl's `*.megatron` block: Megatron-Core parallelism and options; valid only with `backend: megatron`."""

    tensor_model_parallel_size: int = Field(1, ge=1)
    """Tensor-parallel ranks per model replica."""
    pipeline_model_parallel_size: int = Field(1, ge=1)
    """Pipeline stages per model replica."""
    virtual_pipeline_model_parallel_size: int | None = refused(
        None, "virtual (interleaved) pipeline parallelism is not implemented in rlc yet")
    """Model chunks per pipeline stage for the interleaved schedule."""
    context_parallel_size: int = refused(1, "context parallelism is not implemented in rlc yet", ge=1)
    """Ranks that split each sequence (Megatron context parallelism)."""
    expert_model_parallel_size: int = refused(1, "MoE expert parallelism is not implemented in rlc yet", ge=1)
    """Ranks that split the experts of MoE layers."""
    expert_tensor_parallel_size: int | None = refused(None, "MoE expert parallelism is not implemented in rlc yet")
    """Tensor-parallel size inside each expert (default: tensor_model_parallel_size)."""
    sequence_parallel: bool = True
    """Megatron sequence parallelism of norms and dropouts (used when tensor parallel > 1)."""
    use_distributed_optimizer: bool = True
    """Shard the optimizer state over data-parallel ranks."""
    use_dist_checkpointing: bool = refused(
        False, "rlc loads the initial weights from the Hugging Face checkpoint at model.path; loading a Megatron "
               "dist checkpoint is not implemented")
    """Load the initial weights from a Megatron dist checkpoint."""
    dist_checkpointing_path: str | None = refused(None, "loading a Megatron dist checkpoint is not implemented")
    """Where that dist checkpoint is."""
    dist_checkpointing_prefix: str = refused("", "loading a Megatron dist checkpoint is not implemented")
    """Key prefix inside that dist checkpoint."""
    param_offload: bool = refused(False, "offloading Megatron parameters is not implemented in rlc yet")
    """Keep parameters in CPU memory between uses."""
    grad_offload: bool = refused(False, "offloading Megatron gradients is not implemented in rlc yet")
    """Keep gradients in CPU memory between uses."""
    optimizer_offload: bool = refused(False, "offloading the Megatron optimizer is not implemented in rlc yet")
    """Keep the optimizer state in CPU memory between uses."""
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
    vanilla_mbridge: bool = instead(True, "rlc converts Hugging Face weights with its own converter (no mbridge)")
    """Use mbridge's vanilla bridge."""
    use_remove_padding: bool = instead(True, "rlc's Megatron engine follows model.use_remove_padding")
    """Pack sequences without padding."""
    forward_only: bool = instead(False, "rlc knows from the role (ref, actor, critic) whether a model trains")
    """The model only runs forward passes (set by verl for the reference)."""


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


class Profiler(Section):
    """A role's profiler (verl's `profiler` block of actor, ref, rollout, critic, reward model)."""

    tool: str | None = instead(None, PROFILING, only_with=".enable")
    """Profiler to run: nsys, npu, torch or torch_memory."""
    enable: bool = refused(False, PROFILING)
    """Profile this role."""
    all_ranks: bool = instead(False, PROFILING, only_with=".enable")
    """Profile every rank."""
    ranks: list[int] = instead([], PROFILING, only_with=".enable")
    """Ranks to profile."""
    save_path: str | None = instead(None, PROFILING, only_with=".enable")
    """Where traces go."""
    tool_config: dict[str, Any] | None = instead(None, PROFILING, only_with=".enable")
    """Per-tool options (nsys, npu, torch, torch_memory)."""


class GlobalProfiler(Section):
    """verl's `global_profiler`: which steps to profile, with which tool."""

    tool: str | None = instead(None, PROFILING, only_with=".steps")
    """Profiler to run: nsys, npu, torch or torch_memory."""
    steps: list[int] | None = refused(None, PROFILING)
    """Training steps to profile."""
    profile_continuous_steps: bool = instead(False, PROFILING, only_with=".steps")
    """Merge consecutive profiled steps into one trace."""
    save_path: str = instead("outputs/profile", PROFILING, only_with=".steps")
    """Where traces go."""
    global_tool_config: dict[str, Any] = instead({}, PROFILING, only_with=".steps")
    """Per-tool options of the controller and workers (nsys, torch_memory)."""


class RouterReplay(Section):
    """MoE router replay: record the rollout's expert routing and replay it in training."""

    mode: Literal["disabled", "R2", "R3"] = refused(
        "disabled", "MoE router replay is not implemented in rlc")
    """disabled, or how routing decisions are recorded and replayed."""
    record_file: str | None = refused(None, "MoE router replay is not implemented in rlc")
    """Where recorded routing goes."""
    replay_file: str | None = refused(None, "MoE router replay is not implemented in rlc")
    """Recorded routing to replay."""
