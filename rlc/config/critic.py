"""`critic`: the value model for GAE/PPO. Its model defaults to the actor's (resolve fills it in)."""

from pydantic import Field

from rlc.config.actor import LossAggMode, Strategy
from rlc.config.base import Section, instead, refused
from rlc.config.engine import MEGATRON_PER_ROLE, Checkpoint, FSDPConfig, MegatronConfig, Optim, Profiler
from rlc.config.model import ModelConfig

CRITIC_LORA = ("LoRA is implemented for the policy only (actor_rollout_ref.model.lora_rank); the critic trains all "
               "weights")


class CriticModel(ModelConfig):
    """The value model: a causal LM whose head is replaced by one scalar output."""

    path: str | None = None  # type: ignore[assignment]
    """Local directory or Hub repo id (default: actor_rollout_ref.model.path)."""
    fsdp_config: FSDPConfig | None = None
    """FSDP sharding of the critic (verl's place for it; critic.fsdp is the older one)."""
    lora_rank: int = refused(0, CRITIC_LORA, ge=0)
    """LoRA rank; 0 trains all weights."""
    lora_alpha: int = instead(16, CRITIC_LORA, only_with=".lora_rank")
    """LoRA scaling numerator."""
    target_modules: str | list[str] = instead("all-linear", CRITIC_LORA, only_with=".lora_rank")
    """Modules that get LoRA adapters."""
    exclude_modules: str | list[str] | None = instead(None, CRITIC_LORA, only_with=".lora_rank")
    """Modules left without adapters."""
    lora_adapter_path: str | None = refused(None, CRITIC_LORA)
    """A trained adapter to start from."""


class Critic(Section):
    """The value model's training (PPO with GAE)."""

    enable: bool | None = None
    """Train a critic; default: exactly when adv_estimator is gae."""
    strategy: Strategy = "fsdp"
    """Training engine; `backend` decides it in rlc."""
    rollout_n: int | None = instead(None, "rlc reads the sample count from actor_rollout_ref.rollout.n",
                                      same_as="actor_rollout_ref.rollout.n")
    """Samples per prompt, mirrored from rollout.n by verl."""
    optim: Optim = Optim(lr=1e-5)
    """Optimizer and schedule of the critic."""
    model: CriticModel = CriticModel()
    """The value model."""
    fsdp: FSDPConfig = FSDPConfig()
    """Older place of the critic's FSDP options (model.fsdp_config wins when set)."""
    megatron: MegatronConfig = instead(
        MegatronConfig(), "the critic uses the actor's megatron layout (actor_rollout_ref.actor.megatron)",
        same_as="actor_rollout_ref.actor.megatron", own=MEGATRON_PER_ROLE)
    """Megatron options of the critic."""
    ppo_mini_batch_size: int | None = Field(None, gt=0)
    """Prompts per critic optimizer step (default: the actor's)."""
    ppo_micro_batch_size: int | None = Field(None, gt=0)
    """Deprecated global micro batch; rlc divides it by the data-parallel size."""
    ppo_micro_batch_size_per_gpu: int | None = Field(None, gt=0)
    """Samples per forward/backward pass on each GPU (default: the actor's)."""
    forward_micro_batch_size: int | None = Field(None, gt=0)
    """Deprecated global micro batch of value computation; rlc divides it by the data-parallel size."""
    forward_micro_batch_size_per_gpu: int | None = Field(None, gt=0)
    """Samples per forward pass on each GPU when computing values (default: ppo_micro_batch_size_per_gpu)."""
    use_dynamic_bsz: bool | None = None
    """Token-count micro-batches (default: the actor's use_dynamic_bsz)."""
    ppo_max_token_len_per_gpu: int = Field(32768, gt=0)
    """Token budget of a training micro-batch with use_dynamic_bsz."""
    forward_max_token_len_per_gpu: int | None = Field(None, gt=0)
    """Token budget of a value micro-batch with use_dynamic_bsz (default: ppo_max_token_len_per_gpu)."""
    ppo_epochs: int | None = Field(None, ge=1)
    """Passes over each batch (default: the actor's)."""
    shuffle: bool | None = None
    """Shuffle between passes (default: the actor's)."""
    data_loader_seed: int = 42
    """Seed of that shuffle."""
    grad_clip: float = Field(1.0, gt=0)
    """Clip the global gradient norm at this value."""
    cliprange_value: float = Field(0.5, gt=0)
    """Value clipping: new values stay within this distance of the old ones."""
    loss_agg_mode: LossAggMode | None = None
    """Aggregation of the value loss (default: the actor's)."""
    loss_scale_factor: float | None = instead(None, "rlc divides seq-mean-token-sum-norm by the response length")
    """Divisor of seq-mean-token-sum-norm (default: the response length)."""
    ulysses_sequence_parallel_size: int = Field(1, ge=1)
    """Ranks that split each sequence (DeepSpeed Ulysses, FSDP only)."""
    nccl_timeout: int = instead(600, "rlc uses actor_rollout_ref.nccl_timeout for every process group", gt=0)
    """Timeout of the critic's collective operations, in seconds."""
    load_weight: bool = instead(True, "rlc always loads the critic from model.path")
    """Megatron: load the initial weights."""
    profiler: Profiler = Profiler()
    """Profiling of the critic."""
    checkpoint: Checkpoint = Checkpoint()
    """Checkpoint contents."""
