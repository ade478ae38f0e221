"""The whole config tree: verl's sections and nesting, plus `backend`, `reward_api` and `hf_upload`."""

from typing import Any, Literal

from pydantic import Field

from rlc.config.actor import Actor, Ref
from rlc.config.algorithm import Algorithm
from rlc.config.base import Section, instead
from rlc.config.cluster import RayCluster, Slurm
from rlc.config.critic import Critic
from rlc.config.data import Data
from rlc.config.engine import GlobalProfiler
from rlc.config.model import ModelConfig
from rlc.config.reward import CustomRewardFunction, Reward, RewardAPI, RewardManager, RewardModel, SandboxFusion
from rlc.config.rollout import Rollout
from rlc.config.trainer import Trainer
from rlc.config.unsupported import Distillation, Skip, TransferQueue
from rlc.config.upload import HFUpload


class ActorRolloutRef(Section):
    """The policy: its model, its training, its generation, and the frozen reference."""

    model: ModelConfig
    """The policy model."""
    actor: Actor = Actor()
    """The policy's training."""
    rollout: Rollout = Rollout()
    """Generation."""
    ref: Ref = Ref()
    """The reference model."""
    hybrid_engine: bool = True
    """Colocate actor and rollout on the same GPUs (vLLM sleeps while training); false: rollout on
    rollout.n_gpus_per_node GPUs of its own."""
    nccl_timeout: int = Field(600, gt=0)
    """Timeout of collective operations, in seconds."""


class RayInit(Section):
    """Arguments of ray.init."""

    num_cpus: int | None = None
    """CPUs Ray may use on the head (default: all)."""
    runtime_env: dict[str, Any] | None = None
    """Ray runtime environment (env_vars, ...) for every worker."""


class RayKwargs(Section):
    """Ray options."""

    ray_init: RayInit = RayInit()
    """Arguments of ray.init."""
    timeline_json_file: str | None = instead(None, "rlc does not write a Ray timeline")
    """Write Ray's timeline (chrome trace) here."""


class RLCConfig(Section):
    """An rlc (verl-compatible) training config."""

    backend: Literal["fsdp", "megatron"] = "fsdp"
    """rlc: training engine, FSDP2 or Megatron-Core (verl: --config-name ppo_megatron_trainer)."""
    algorithm: Algorithm = Algorithm()
    """Advantages and KL penalty."""
    data: Data
    """Prompts."""
    actor_rollout_ref: ActorRolloutRef
    """The policy."""
    critic: Critic = Critic()
    """The value model."""
    trainer: Trainer = Trainer()
    """The run."""
    reward: Reward = Reward()
    """Reward computation (verl 0.9.1's section)."""
    reward_model: RewardModel = RewardModel()
    """Reward computation (verl's older section)."""
    reward_manager: RewardManager = RewardManager()
    """verl's reward manager choice."""
    custom_reward_function: CustomRewardFunction = CustomRewardFunction()
    """A reward function of the user's."""
    reward_api: RewardAPI = RewardAPI()
    """rlc: a remote reward server."""
    hf_upload: HFUpload = HFUpload()
    """rlc: upload to the Hugging Face Hub."""
    ray_kwargs: RayKwargs = RayKwargs()
    """Ray options."""
    ray_cluster: RayCluster = RayCluster()
    """rlc: the Ray cluster of `--executor ray` and `--executor slurm`."""
    slurm: Slurm = Slurm()
    """rlc: sbatch options of `--executor slurm`."""
    global_profiler: GlobalProfiler = GlobalProfiler()
    """verl's profiler settings."""
    transfer_queue: TransferQueue = TransferQueue()
    """verl's TransferQueue."""
    sandbox_fusion: SandboxFusion = SandboxFusion()
    """verl 0.9.1's legacy place of reward.sandbox_fusion (copied to reward_model.sandbox_fusion)."""
    distillation: Distillation = Distillation()
    """verl's distillation from teacher models."""
    skip: Skip = Skip()
    """verl's replay of dumped rollouts."""
