"""`actor_rollout_ref.actor` and `.ref`: the policy's training and the reference model's log-probs.

The names of verl's policy losses and KL estimators live here once, each beside the subset rlc's runtime runs: the
schema accepts every name verl registers, and validation says which are not implemented yet.
"""

from typing import Literal

from pydantic import Field

from rlc.config.base import Section, instead, partly
from rlc.config.engine import (
    MEGATRON_PER_ROLE,
    NO_PADDING_BUCKETS,
    Checkpoint,
    FSDPConfig,
    MegatronConfig,
    Optim,
    Profiler,
    Qat,
    RouterReplay,
)

LOSS_MODES = ("vanilla", "dppo_tv", "dppo_kl", "gspo", "sapo", "gpg", "clip_cov", "kl_cov", "geo_mean", "dro", "cispo",
              "bypass_mode")
"""Every policy loss verl 0.9.1 registers (`verl/trainer/ppo/core_algos.py`); rlc runs them all
(rlc_runtime.algorithms.policy_losses.POLICY_LOSS_MODES)."""

KL_KINDS = ("kl", "k1", "abs", "mse", "k2", "low_var_kl", "k3", "full", "kl+", "k1+", "abs+", "low_var_kl+", "k3+")
"""verl's KL estimators; a trailing `+` is verl's straight-through gradient variant."""
IMPLEMENTED_KL_KINDS = ("kl", "k1", "abs", "mse", "k2", "low_var_kl", "k3", "kl+", "k1+", "abs+", "low_var_kl+", "k3+")

LossAggMode = Literal["token-mean", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm"]
LossMode = Literal[LOSS_MODES]  # type: ignore[valid-type]
KLKind = Literal[KL_KINDS]  # type: ignore[valid-type]
Strategy = Literal["fsdp", "fsdp2", "megatron"]
SEQUENCE_LEVEL_LOSS_MODES = ("gspo", "sapo", "geo_mean")
"""Modes verl always aggregates with seq-mean-token-mean, whatever loss_agg_mode says (rlc honours loss_agg_mode)."""

ROLLOUT_N = "actor_rollout_ref.rollout.n"
ACTOR = "actor_rollout_ref.actor."
VISION = "multimodal (vision) models are not implemented in rlc"
NO_COMPILE = "rlc does not torch.compile the model"


class PolicyLoss(Section):
    """Which policy-gradient loss the actor minimises, and the parameters of the non-vanilla ones."""

    loss_mode: LossMode = "vanilla"
    """Policy loss: vanilla (PPO clip with dual-clip), dppo_tv, dppo_kl, gspo, sapo, gpg, clip_cov, kl_cov,
    geo_mean, dro, cispo, bypass_mode (with algorithm.rollout_correction.bypass_mode)."""
    clip_cov_ratio: float = Field(0.0002, gt=0)
    """clip_cov: fraction of tokens whose update is clipped by covariance."""
    clip_cov_lb: float = 1.0
    """clip_cov: lower covariance bound."""
    clip_cov_ub: float = 5.0
    """clip_cov: upper covariance bound."""
    kl_cov_ratio: float = Field(0.0002, gt=0)
    """kl_cov: fraction of tokens that get the KL penalty."""
    ppo_kl_coef: float = Field(0.1, ge=0)
    """kl_cov: coefficient of that KL penalty."""
    dro_beta: float | None = Field(None, gt=0)
    """dro: coefficient of the quadratic log-ratio penalty (Direct Reward Optimization); required by dro."""


class Actor(Section):
    """The policy's PPO/GRPO update."""

    strategy: Strategy = "fsdp"
    """Training engine; `backend` decides it in rlc (megatron here maps to backend megatron)."""
    rollout_n: int | None = instead(None, "rlc reads the sample count from rollout.n", same_as=ROLLOUT_N)
    """Samples per prompt, mirrored from rollout.n by verl."""
    ppo_mini_batch_size: int = Field(256, gt=0)
    """Prompts per optimizer step (times rollout.n samples), split over the data-parallel ranks."""
    ppo_micro_batch_size: int | None = Field(None, gt=0)
    """Deprecated global micro batch; rlc divides it by the data-parallel size into ppo_micro_batch_size_per_gpu."""
    ppo_micro_batch_size_per_gpu: int | None = Field(None, gt=0)
    """Samples per forward/backward pass on each GPU (gradient accumulation up to the mini-batch)."""
    use_dynamic_bsz: bool = False
    """Micro-batches by token budget (ppo_max_token_len_per_gpu) instead of ppo_micro_batch_size_per_gpu rows."""
    ppo_max_token_len_per_gpu: int = Field(16384, gt=0)
    """Token budget of a micro-batch with use_dynamic_bsz."""
    clip_ratio: float = Field(0.2, gt=0)
    """PPO clip range epsilon; the default of clip_ratio_low and clip_ratio_high."""
    clip_ratio_low: float | None = Field(None, gt=0)
    """Lower clip: the ratio is clipped at 1 - clip_ratio_low (default clip_ratio)."""
    clip_ratio_high: float | None = Field(None, gt=0)
    """Upper clip: the ratio is clipped at 1 + clip_ratio_high (DAPO's clip-higher; default clip_ratio)."""
    clip_ratio_c: float = Field(3.0, gt=1)
    """Dual-clip constant: for negative advantages the loss is bounded by clip_ratio_c times the advantage."""
    tau_pos: float = Field(1.0, gt=0)
    """sapo: smoothing temperature for positive advantages."""
    tau_neg: float = Field(1.05, gt=0)
    """sapo: smoothing temperature for negative advantages."""
    freeze_vision_tower: bool = instead(False, VISION)
    """Keep a vision-language model's vision encoder frozen."""
    policy_loss: PolicyLoss = PolicyLoss()
    """Policy-loss choice and parameters."""
    loss_agg_mode: LossAggMode = "token-mean"
    """How token losses become one number: token-mean, seq-mean-token-sum, seq-mean-token-mean, or
    seq-mean-token-sum-norm (Dr. GRPO: token sums over a constant length)."""
    loss_scale_factor: float | None = instead(None, "rlc divides seq-mean-token-sum-norm by the response length")
    """Divisor of seq-mean-token-sum-norm (default: the response length)."""
    entropy_coeff: float = 0.0
    """Weight of the entropy bonus subtracted from the loss."""
    calculate_entropy: bool = instead(False, "rlc computes the entropy in every update and logs actor/entropy")
    """Compute the entropy even when entropy_coeff is 0."""
    use_kl_loss: bool = False
    """Add a KL(policy || reference) loss term (GRPO); needs the reference model."""
    use_prefix_grouper: bool = instead(  # verl's shared prompt sees the positions and keys the full sequence has
        False, "rlc computes each sample's full sequence (prompt and response) in its forward passes: the same "
               "log-probs and entropies up to rounding, more compute (verl computes a group's prompt once)")
    """Run the shared prompt of a group once in the forward pass."""
    use_torch_compile: bool = instead(True, NO_COMPILE)
    """Compile the log-prob and entropy functions with torch.compile."""
    kl_loss_coef: float = Field(0.001, ge=0)
    """Weight of the KL loss."""
    kl_loss_type: KLKind = partly("low_var_kl", IMPLEMENTED_KL_KINDS)
    """KL estimator of the KL loss: kl (k1), abs, mse (k2), low_var_kl (k3), full; `+` for straight-through."""
    ppo_epochs: int = Field(1, ge=1)
    """Passes over each batch of samples."""
    shuffle: bool = False
    """Shuffle the samples between those passes."""
    data_loader_seed: int | None = 42
    """Seed of that shuffle."""
    grad_clip: float = Field(1.0, gt=0)
    """Clip the global gradient norm at this value."""
    ulysses_sequence_parallel_size: int = Field(1, ge=1)
    """Ranks that split each sequence (DeepSpeed Ulysses, FSDP only); the data-parallel size is GPUs / this."""
    entropy_from_logits_with_chunking: bool = instead(False, "rlc computes the entropy over the whole logits")
    """Compute the entropy in chunks to save memory."""
    entropy_checkpointing: bool = instead(False, "rlc does not recompute the entropy in backward")
    """Recompute the entropy in the backward pass instead of storing it."""
    entropy_from_logits_chunk_size: int = instead(2048, "rlc computes the entropy over the whole logits",
                                                  only_with=".entropy_from_logits_with_chunking")
    """Chunk size of the chunked entropy."""
    pad_to_length: bool = instead(False, NO_PADDING_BUCKETS)
    """Round each packed micro-batch up to a multiple of fsdp_config.pad_to_length_bucket tokens."""
    qat: Qat = Qat()
    """Quantization-aware training."""
    use_remove_padding: bool | None = instead(None, "rlc reads model.use_remove_padding",
                                               same_as="actor_rollout_ref.model.use_remove_padding")
    """Mirror of model.use_remove_padding."""
    use_fused_kernels: bool | None = instead(None, "rlc reads model.use_fused_kernels",
                                              same_as="actor_rollout_ref.model.use_fused_kernels")
    """Mirror of model.use_fused_kernels."""
    calculate_sum_pi_squared: bool = False
    """Compute sum_v pi_v^2 per response token in the old-log-prob pass (the optimal token baselines need it)."""
    sum_pi_squared_checkpointing: bool = instead(False, "rlc computes sum pi^2 without a graph, in the "
                                                        "old-log-prob pass only: there is no backward to save")
    """Recompute that sum in backward."""
    load_weight: bool = instead(True, "rlc always loads the weights from model.path")
    """Megatron: load the initial weights."""
    profiler: Profiler = Profiler()
    """Profiling of the update."""
    router_replay: RouterReplay = RouterReplay()
    """MoE router replay."""
    optim: Optim = Optim()
    """Optimizer and schedule."""
    fsdp_config: FSDPConfig = FSDPConfig()
    """FSDP sharding (backend fsdp)."""
    megatron: MegatronConfig = MegatronConfig()
    """Megatron parallelism (backend megatron); ref and critic use this layout too."""
    checkpoint: Checkpoint = Checkpoint()
    """Checkpoint contents."""


class Ref(Section):
    """The reference policy: frozen weights of the initial model, used for the KL term."""

    strategy: Strategy | None = None
    """Engine of the reference (default: the actor's)."""
    rollout_n: int | None = instead(None, "rlc reads the sample count from rollout.n", same_as=ROLLOUT_N)
    """Samples per prompt, mirrored from rollout.n by verl."""
    log_prob_micro_batch_size: int | None = Field(None, gt=0)
    """Deprecated global micro batch of reference log-probs; rlc divides it by the data-parallel size."""
    log_prob_micro_batch_size_per_gpu: int | None = Field(None, gt=0)
    """Samples per forward pass on each GPU when computing reference log-probs."""
    log_prob_use_dynamic_bsz: bool | None = None
    """Token-count micro-batches for reference log-probs (default: actor.use_dynamic_bsz)."""
    log_prob_max_token_len_per_gpu: int | None = Field(None, gt=0)
    """Token budget of those micro-batches (default: actor.ppo_max_token_len_per_gpu)."""
    ulysses_sequence_parallel_size: int | None = Field(None, ge=1)
    """Ranks that split each sequence (default: the actor's)."""
    use_torch_compile: bool = instead(True, NO_COMPILE, same_as=ACTOR + "use_torch_compile")
    """Compile the log-prob function with torch.compile (default: the actor's)."""
    entropy_from_logits_with_chunking: bool = instead(False, "the reference computes no entropy in rlc")
    """Compute the entropy in chunks."""
    entropy_checkpointing: bool = instead(False, "the reference computes no entropy in rlc")
    """Recompute the entropy in backward."""
    entropy_from_logits_chunk_size: int = instead(2048, "the reference computes no entropy in rlc",
                                                  only_with=".entropy_from_logits_with_chunking")
    """Chunk size of the chunked entropy."""
    pad_to_length: bool = instead(False, NO_PADDING_BUCKETS)
    """Round each packed micro-batch up to a multiple of fsdp_config.pad_to_length_bucket tokens."""
    load_weight: bool = instead(True, "rlc always loads the reference from model.path")
    """Megatron: load the initial weights."""
    profiler: Profiler = Profiler()
    """Profiling of the reference's forward passes."""
    router_replay: RouterReplay = RouterReplay()
    """MoE router replay."""
    fsdp_config: FSDPConfig = FSDPConfig(param_offload=False, forward_only=True)
    """FSDP sharding of the reference (backend fsdp)."""
    megatron: MegatronConfig = instead(
        MegatronConfig(forward_only=True),
        "the reference uses the actor's megatron layout (actor_rollout_ref.actor.megatron)",
        same_as="actor_rollout_ref.actor.megatron", own=MEGATRON_PER_ROLE)
    """Megatron options of the reference."""
