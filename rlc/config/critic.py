"""`critic`: the value model for GAE/PPO. Its model defaults to the actor's (resolve fills it in)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from rlc.config.actor import LossAggMode
from rlc.config.base import Section, unimplemented
from rlc.config.engine import Checkpoint, FSDPConfig, MegatronConfig, Optim
from rlc.config.model import ModelConfig


class CriticModel(ModelConfig):
    path: str | None = Field(None, description="Defaults to actor_rollout_ref.model.path")
    fsdp_config: FSDPConfig | None = Field(None, description="Older verl place for critic.fsdp")


class Critic(Section):
    enable: bool | None = Field(None, description="Default: on exactly when adv_estimator is gae")
    strategy: Literal["fsdp", "fsdp2", "megatron"] = "fsdp"
    optim: Optim = Optim(lr=1e-5)
    model: CriticModel = CriticModel()
    fsdp: FSDPConfig = FSDPConfig()
    megatron: MegatronConfig = MegatronConfig()
    ppo_mini_batch_size: int | None = Field(None, gt=0, description="Defaults to the actor's")
    ppo_micro_batch_size: int | None = Field(None, gt=0, description="Deprecated: global; use *_per_gpu")
    ppo_micro_batch_size_per_gpu: int | None = Field(None, gt=0)
    forward_micro_batch_size: int | None = Field(None, gt=0)
    forward_micro_batch_size_per_gpu: int | None = Field(None, gt=0)
    use_dynamic_bsz: bool | None = None
    ppo_max_token_len_per_gpu: int = Field(32768, gt=0)
    forward_max_token_len_per_gpu: int | None = None
    ppo_epochs: int | None = Field(None, ge=1)
    shuffle: bool | None = None
    data_loader_seed: int = 42
    grad_clip: float = Field(1.0, gt=0)
    cliprange_value: float = Field(0.5, gt=0)
    loss_agg_mode: LossAggMode | None = None
    ulysses_sequence_parallel_size: int = unimplemented(1, "Ulysses sequence parallelism is not implemented")
    checkpoint: Checkpoint = Checkpoint()
