"""The whole config tree: verl's sections and nesting, plus `backend`, `reward_api` and `hf_upload`."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from rlc.config.actor import Actor, Ref
from rlc.config.algorithm import Algorithm
from rlc.config.base import Section
from rlc.config.critic import Critic
from rlc.config.data import Data
from rlc.config.model import ModelConfig
from rlc.config.reward import CustomRewardFunction, RewardAPI, RewardModel
from rlc.config.rollout import Rollout
from rlc.config.trainer import Trainer
from rlc.config.upload import HFUpload


class ActorRolloutRef(Section):
    model: ModelConfig
    actor: Actor = Actor()
    rollout: Rollout = Rollout()
    ref: Ref = Ref()
    hybrid_engine: bool = Field(True, description=(
        "Colocate actor and rollout on the same GPUs (vLLM sleeps while training); false: rollout on "
        "rollout.n_gpus_per_node GPUs of its own"))
    nccl_timeout: int = Field(600, gt=0)


class RayInit(Section):
    num_cpus: int | None = None
    runtime_env: dict[str, Any] | None = None


class RayKwargs(Section):
    ray_init: RayInit = RayInit()
    timeline_json_file: str | None = None


class RLCConfig(Section):
    backend: Literal["fsdp", "megatron"] = "fsdp"
    algorithm: Algorithm = Algorithm()
    data: Data
    actor_rollout_ref: ActorRolloutRef
    critic: Critic = Critic()
    trainer: Trainer = Trainer()
    reward_model: RewardModel = RewardModel()
    custom_reward_function: CustomRewardFunction = CustomRewardFunction()
    reward_api: RewardAPI = RewardAPI()
    hf_upload: HFUpload = HFUpload()
    ray_kwargs: RayKwargs = RayKwargs()
