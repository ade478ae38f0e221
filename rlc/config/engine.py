"""Training-engine options shared by actor, ref and critic: optimizer, FSDP and Megatron blocks, checkpoints."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from rlc.config.base import Section, unimplemented


class Optim(Section):
    optimizer: Literal["AdamW", "adamw"] = "AdamW"
    optimizer_impl: str = "torch.optim"
    lr: float = Field(1e-6, gt=0)
    lr_warmup_steps_ratio: float = Field(0.0, ge=0, le=1)
    lr_warmup_steps: int = -1
    total_training_steps: int = -1
    weight_decay: float = Field(0.01, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    clip_grad: float = Field(1.0, gt=0)
    min_lr_ratio: float = Field(0.0, ge=0, le=1)
    num_cycles: float = 0.5
    lr_scheduler_type: Literal["constant", "cosine", "linear"] = "constant"
    warmup_style: Literal["constant", "cosine", "linear"] | None = Field(
        None, description="Deprecated verl name of lr_scheduler_type"
    )
    zero_indexed_step: bool = True
    override_optimizer_config: dict | None = None


class WrapPolicy(Section):
    min_num_params: int = 0
    transformer_layer_cls_to_wrap: list[str] | None = None


class FSDPConfig(Section):
    wrap_policy: WrapPolicy = WrapPolicy()
    param_offload: bool = False
    optimizer_offload: bool = False
    offload_policy: bool = False
    reshard_after_forward: bool = True
    fsdp_size: int = -1
    forward_prefetch: bool = False
    model_dtype: Literal["fp32", "bf16", "fp16", "float32", "bfloat16"] = "fp32"
    dtype: Literal["bfloat16", "float16", "float32"] = "bfloat16"
    mixed_precision: dict | None = None
    use_orig_params: bool = False
    seed: int = 42
    strategy: Literal["fsdp", "fsdp2"] = "fsdp"
    use_torch_compile: bool = unimplemented(True)
    ulysses_sequence_parallel_size: int = unimplemented(1, "Ulysses sequence parallelism is not implemented")


class MegatronConfig(Section):
    """verl's `*.megatron` block; valid only with `backend: megatron`."""

    tensor_model_parallel_size: int = Field(1, ge=1)
    pipeline_model_parallel_size: int = Field(1, ge=1)
    virtual_pipeline_model_parallel_size: int | None = unimplemented(
        None, "virtual (interleaved) pipeline parallelism is not implemented", error=True)
    context_parallel_size: int = unimplemented(1, "context parallelism is not implemented")
    expert_model_parallel_size: int = unimplemented(1, "MoE expert parallelism is not implemented")
    sequence_parallel: bool = True
    use_distributed_optimizer: bool = True
    use_dist_checkpointing: bool = False
    dist_checkpointing_path: str | None = None
    param_offload: bool = unimplemented(False)
    grad_offload: bool = unimplemented(False)
    optimizer_offload: bool = unimplemented(False)
    seed: int = 42
    params_dtype: Literal["bfloat16", "float16", "float32"] = "bfloat16"


class Checkpoint(Section):
    save_contents: list[Literal["model", "optimizer", "extra", "hf_model"]] = ["model", "optimizer", "extra"]
    load_contents: list[Literal["model", "optimizer", "extra", "hf_model"]] | None = None
    async_save: bool = unimplemented(False)
