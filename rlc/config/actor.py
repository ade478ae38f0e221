"""`actor_rollout_ref.actor` and `.ref`: the policy's training and the reference model's log-probs."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from rlc.config.base import Section, unimplemented
from rlc.config.engine import Checkpoint, FSDPConfig, MegatronConfig, Optim

LossAggMode = Literal["token-mean", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm"]
KLLossType = Literal["kl", "k1", "abs", "mse", "k2", "low_var_kl", "k3"]


class PolicyLoss(Section):
    loss_mode: Literal["vanilla"] = "vanilla"


class Actor(Section):
    strategy: Literal["fsdp", "fsdp2", "megatron"] = "fsdp"
    ppo_mini_batch_size: int = Field(256, gt=0)
    ppo_micro_batch_size: int | None = Field(None, gt=0, description="Deprecated: global; use *_per_gpu")
    ppo_micro_batch_size_per_gpu: int | None = Field(None, gt=0)
    use_dynamic_bsz: bool = Field(False, description="Micro-batches by token budget (ppo_max_token_len_per_gpu) "
                                  "instead of ppo_micro_batch_size_per_gpu rows")
    ppo_max_token_len_per_gpu: int = Field(16384, gt=0)
    clip_ratio: float = Field(0.2, gt=0)
    clip_ratio_low: float | None = Field(None, gt=0, description="Defaults to clip_ratio")
    clip_ratio_high: float | None = Field(None, gt=0, description="Defaults to clip_ratio")
    clip_ratio_c: float = Field(3.0, gt=1)
    policy_loss: PolicyLoss = PolicyLoss()
    loss_agg_mode: LossAggMode = "token-mean"
    entropy_coeff: float = 0.0
    use_kl_loss: bool = False
    kl_loss_coef: float = Field(0.001, ge=0)
    kl_loss_type: KLLossType = "low_var_kl"
    ppo_epochs: int = Field(1, ge=1)
    shuffle: bool = False
    data_loader_seed: int | None = 42
    grad_clip: float = Field(1.0, gt=0)
    ulysses_sequence_parallel_size: int = unimplemented(1, "Ulysses sequence parallelism is not implemented")
    use_torch_compile: bool = unimplemented(True)
    entropy_from_logits_with_chunking: bool = False
    entropy_checkpointing: bool = False
    optim: Optim = Optim()
    fsdp_config: FSDPConfig = FSDPConfig()
    megatron: MegatronConfig = MegatronConfig()
    checkpoint: Checkpoint = Checkpoint()


class Ref(Section):
    strategy: Literal["fsdp", "fsdp2", "megatron"] | None = None
    log_prob_micro_batch_size: int | None = Field(None, gt=0, description="Deprecated: global; use *_per_gpu")
    log_prob_micro_batch_size_per_gpu: int | None = Field(None, gt=0)
    log_prob_use_dynamic_bsz: bool | None = None
    log_prob_max_token_len_per_gpu: int | None = None
    ulysses_sequence_parallel_size: int = unimplemented(1, "Ulysses sequence parallelism is not implemented")
    use_torch_compile: bool = unimplemented(True)
    fsdp_config: FSDPConfig = FSDPConfig(param_offload=False)
    megatron: MegatronConfig = MegatronConfig()
