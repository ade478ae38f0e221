"""`algorithm`: advantage estimation and the KL-in-reward controller (verl's names and defaults)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from rlc.config.actor import KLLossType
from rlc.config.base import Section, unimplemented

ADV_ESTIMATORS = ("gae", "grpo", "grpo_vectorized", "grpo_passk", "rloo", "rloo_vectorized", "reinforce_plus_plus",
                  "reinforce_plus_plus_baseline", "remax", "opo", "gpg", "optimal_token_baseline")
"""Every `adv_estimator` rlc knows: the keys of rlc_runtime.algorithms.advantages.ADVANTAGE_ESTIMATORS."""
GROUP_ESTIMATORS = ("grpo", "grpo_vectorized", "grpo_passk", "rloo", "rloo_vectorized",
                    "reinforce_plus_plus_baseline", "opo", "gpg", "optimal_token_baseline")
"""Estimators whose baseline comes from the other samples of the same prompt (rollout.n >= 2 to mean anything)."""


class KLControl(Section):
    type: Literal["fixed", "adaptive"] = "fixed"
    kl_coef: float = Field(0.001, ge=0)
    horizon: int = Field(10000, gt=0)
    target_kl: float = Field(0.1, gt=0)


class FilterGroups(Section):
    enable: bool = Field(False, description="DAPO dynamic sampling: drop prompts whose samples all score alike")
    metric: Literal["acc", "score", "seq_reward", "seq_final_reward"] | None = Field(
        None, description="What must vary within a prompt's samples to keep it: acc is the reward function's score, "
                          "the others that score after overlong shaping")
    max_num_gen_batches: int = Field(
        0, ge=0, description="Generation rounds per step before giving up on filling the batch; 0: no limit")
    max_inflight_gen_batches: int = unimplemented(1, "rounds are generated one after the other")


class RolloutCorrection(Section):
    rollout_is: Literal["token", "sequence"] | None = Field(
        None, description="Importance weights trainer/rollout per token or per sequence; null: none")
    rollout_is_threshold: float = Field(2.0, gt=0, description="Upper truncation of the importance weights")
    rollout_is_batch_normalize: bool = Field(False, description="Rescale the weights to mean 1 over the batch")
    rollout_rs: str | None = Field(None, description="Rejection sampling: token_k1|k2|k3, seq_sum_k*, seq_mean_k*, "
                                                     "seq_max_k2|k3 (comma-separated for several)")
    rollout_rs_threshold: str | float | None = Field(
        None, description="Rejection threshold(s): upper bound, or lower_upper for k1 ratios")
    bypass_mode: bool = unimplemented(False, "bypass mode is not implemented: the trainer recomputes old log-probs",
                                      error=True)
    loss_type: Literal["ppo_clip", "reinforce"] = unimplemented("ppo_clip", "only used in bypass mode")


class Algorithm(Section):
    adv_estimator: Literal[ADV_ESTIMATORS] = "gae"
    gamma: float = Field(1.0, ge=0, le=1)
    lam: float = Field(1.0, ge=0, le=1)
    norm_adv_by_std_in_grpo: bool = True
    use_kl_in_reward: bool = False
    kl_penalty: KLLossType = "kl"
    kl_ctrl: KLControl = KLControl()
    filter_groups: FilterGroups = FilterGroups()
    rollout_correction: RolloutCorrection = RolloutCorrection()
    use_pf_ppo: bool = unimplemented(False)
