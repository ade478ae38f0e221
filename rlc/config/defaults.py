"""Defaults that depend on other keys, made explicit (verl spreads these over `${oc.select:...}` interpolations).

After `fill_defaults` the runtime reads every value directly and never needs to know a fallback rule.
"""

from __future__ import annotations

from rlc.config.base import substituted
from rlc.config.checks import sandbox_sections, uses_critic
from rlc.config.data import VERL_SAMPLERS
from rlc.config.root import RLCConfig
from rlc.topology import data_parallel_size


def fill_defaults(cfg: RLCConfig) -> RLCConfig:
    cfg = cfg.model_copy(deep=True)
    arf, data, critic = cfg.actor_rollout_ref, cfg.data, cfg.critic
    actor, rollout, ref = arf.actor, arf.rollout, arf.ref
    rollout.name = substituted(rollout, "name")  # what runs is what the resolved config says
    cfg.trainer.device = substituted(cfg.trainer, "device")
    rollout.multi_turn.format = substituted(rollout.multi_turn, "format")
    sampler = cfg.data.sampler
    sampler.class_path, sampler.class_name = VERL_SAMPLERS.get((sampler.class_path, sampler.class_name),
                                                               (sampler.class_path, sampler.class_name))

    actor.clip_ratio_low = actor.clip_ratio_low or actor.clip_ratio
    actor.clip_ratio_high = actor.clip_ratio_high or actor.clip_ratio
    for optim in (actor.optim, critic.optim):
        if optim.warmup_style and "lr_scheduler_type" not in optim.model_fields_set:
            optim.lr_scheduler_type = optim.warmup_style
    if actor.ppo_micro_batch_size_per_gpu is None and actor.ppo_micro_batch_size is not None:
        actor.ppo_micro_batch_size_per_gpu = max(1, actor.ppo_micro_batch_size // data_parallel_size(cfg))
    if cfg.backend == "megatron":
        actor.strategy = "megatron"

    rollout.prompt_length = rollout.prompt_length or data.max_prompt_length
    rollout.response_length = rollout.response_length or data.max_response_length
    for block in (rollout, ref):
        if block.log_prob_micro_batch_size_per_gpu is None:
            legacy = block.log_prob_micro_batch_size
            block.log_prob_micro_batch_size_per_gpu = (
                max(1, legacy // data_parallel_size(cfg)) if legacy else actor.ppo_micro_batch_size_per_gpu or 1)
        if block.log_prob_use_dynamic_bsz is None:
            block.log_prob_use_dynamic_bsz = actor.use_dynamic_bsz
        if block.log_prob_max_token_len_per_gpu is None:
            block.log_prob_max_token_len_per_gpu = actor.ppo_max_token_len_per_gpu
    ref.strategy = ref.strategy or actor.strategy
    if ref.ulysses_sequence_parallel_size is None:
        ref.ulysses_sequence_parallel_size = actor.ulysses_sequence_parallel_size

    if cfg.reward.custom_reward_function.path and not cfg.custom_reward_function.path:  # verl 0.9.1's place
        cfg.custom_reward_function = cfg.reward.custom_reward_function.model_copy()
    cfg.reward_model.sandbox_fusion = next((place for place in sandbox_sections(cfg) if place.url),
                                           cfg.reward_model.sandbox_fusion).model_copy()

    critic.enable = uses_critic(cfg)
    critic.model.path = critic.model.path or arf.model.path
    if critic.model.path == arf.model.path and critic.model.revision is None:
        critic.model.revision = arf.model.revision
    critic.ppo_mini_batch_size = critic.ppo_mini_batch_size or actor.ppo_mini_batch_size
    if critic.ppo_micro_batch_size_per_gpu is None:
        critic.ppo_micro_batch_size_per_gpu = (
            max(1, critic.ppo_micro_batch_size // data_parallel_size(cfg)) if critic.ppo_micro_batch_size
            else actor.ppo_micro_batch_size_per_gpu)
    if critic.forward_micro_batch_size_per_gpu is None:
        critic.forward_micro_batch_size_per_gpu = (
            max(1, critic.forward_micro_batch_size // data_parallel_size(cfg)) if critic.forward_micro_batch_size
            else critic.ppo_micro_batch_size_per_gpu)
    critic.use_dynamic_bsz = actor.use_dynamic_bsz if critic.use_dynamic_bsz is None else critic.use_dynamic_bsz
    critic.forward_max_token_len_per_gpu = critic.forward_max_token_len_per_gpu or critic.ppo_max_token_len_per_gpu
    critic.ppo_epochs = critic.ppo_epochs or actor.ppo_epochs
    critic.shuffle = actor.shuffle if critic.shuffle is None else critic.shuffle
    critic.loss_agg_mode = critic.loss_agg_mode or actor.loss_agg_mode
    if cfg.backend == "megatron":
        critic.strategy = "megatron"
    return cfg
