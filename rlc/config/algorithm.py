"""`algorithm`: advantage estimation and the KL-in-reward controller (verl's names and defaults).

The names of verl's advantage estimators live here once, beside the subset rlc's runtime runs.
"""

from typing import Literal

from pydantic import Field

from rlc.config.actor import IMPLEMENTED_KL_KINDS, KLKind
from rlc.config.base import Section, instead, partly, refused

ADV_ESTIMATORS = ("gae", "grpo", "reinforce_plus_plus", "reinforce_plus_plus_baseline", "remax", "rloo", "opo",
                  "grpo_passk", "gpg", "rloo_vectorized", "grpo_vectorized", "optimal_token_baseline",
                  "tir_optimal_token_baseline", "gdpo")
"""Every advantage estimator verl 0.9.1 registers (`AdvantageEstimator` in verl/trainer/ppo/core_algos.py); rlc
runs them all (the keys of rlc_runtime.algorithms.advantages.ADVANTAGE_ESTIMATORS)."""
GROUP_ESTIMATORS = ("grpo", "grpo_vectorized", "grpo_passk", "rloo", "rloo_vectorized",
                    "reinforce_plus_plus_baseline", "opo", "gpg", "optimal_token_baseline",
                    "tir_optimal_token_baseline", "gdpo")
TOKEN_BASELINE_ESTIMATORS = ("optimal_token_baseline", "tir_optimal_token_baseline")
"""Estimators that read sum_v pi_v^2 of the old policy (actor.calculate_sum_pi_squared)."""
"""Estimators whose baseline comes from the other samples of the same prompt (rollout.n >= 2 to mean anything)."""

PF_PPO = "used only by pf_ppo (use_pf_ppo), which rlc does not implement"


class KLControl(Section):
    """The KL-in-reward coefficient: fixed, or adapted towards target_kl."""

    type: Literal["fixed", "adaptive"] = "fixed"
    """fixed, or adaptive (Ziegler et al.): the coefficient follows the measured KL."""
    kl_coef: float = Field(0.001, ge=0)
    """(Initial) coefficient of the KL penalty in the reward."""
    horizon: int = Field(10000, gt=0)
    """Adaptive: samples over which the coefficient adapts."""
    target_kl: float = Field(0.1, gt=0)
    """Adaptive: the KL the controller aims for."""


class FilterGroups(Section):
    """DAPO's dynamic sampling: drop groups whose samples all score the same."""

    enable: bool = False
    """Keep generating until train_batch_size prompts have groups with mixed scores."""
    metric: Literal["acc", "score", "seq_reward", "seq_final_reward"] | None = None
    """What must vary within a prompt's samples to keep it: acc is the reward function's score, the others that
    score after overlong shaping."""
    max_num_gen_batches: int = Field(0, ge=0)
    """Most generation rounds per step before giving up on filling the batch (0: no limit)."""
    max_inflight_gen_batches: int = instead(1, "rlc generates the rounds one after the other", only_with=".enable")
    """Generation rounds in flight at once."""


class RolloutCorrection(Section):
    """Importance sampling and rejection between the rollout engine's and the trainer's distributions."""

    rollout_is: Literal["token", "sequence"] | None = None
    """Importance-weight level: null (off), token or sequence."""
    rollout_is_threshold: float = Field(2.0, gt=0)
    """Upper truncation of the importance weights."""
    rollout_is_batch_normalize: bool = False
    """Normalise the importance weights to mean 1 over the batch."""
    rollout_rs: str | None = None
    """Rejection-sampling rule(s): token_k1|k2|k3, seq_sum_k*, seq_mean_k*, seq_max_k2|k3 (comma-separated)."""
    rollout_rs_threshold: str | float | None = None
    """Threshold(s) of the rejection rule: an upper bound, or lower_upper for k1 ratios."""
    bypass_mode: bool = False
    """Use the rollout's log-probs as the old policy (two policies instead of three): no old-log-prob pass;
    rollout_is/rollout_rs then act inside the loss, between the current policy and the rollout's."""
    loss_type: Literal["ppo_clip", "reinforce"] = "ppo_clip"
    """Bypass mode's loss: ppo_clip (the ratio to the rollout is clipped; IS weights only reported) or reinforce
    (-w A log p with the truncated IS weights w)."""


class PFPPO(Section):
    """Policy filtration PPO: reweight samples by reward."""

    reweight_method: Literal["pow", "max_min", "max_random"] = instead("pow", PF_PPO, only_with="algorithm.use_pf_ppo")
    """How samples are reweighted."""
    weight_pow: float = instead(2.0, PF_PPO, only_with="algorithm.use_pf_ppo")
    """Exponent of the pow method."""


class Algorithm(Section):
    """Advantages and the KL penalty in the reward."""

    adv_estimator: Literal[ADV_ESTIMATORS] = "gae"  # type: ignore[valid-type]
    """Advantage estimator: gae (PPO with a critic), grpo, rloo, reinforce_plus_plus, remax, opo, gpg, gdpo,
    optimal_token_baseline, ..."""
    gamma: float = Field(1.0, ge=0, le=1)
    """Discount factor."""
    lam: float = Field(1.0, ge=0, le=1)
    """GAE's lambda: bias-variance trade-off of the advantage."""
    norm_adv_by_std_in_grpo: bool = True
    """GRPO: divide advantages by the group's standard deviation (false: Dr. GRPO)."""
    gdpo_reward_keys: list[str] | None = None
    """gdpo: the keys of the reward function's returned dict whose values are normalised one by one."""
    gdpo_reward_weights: list[float] | None = None
    """gdpo: the weight of each of those keys in the sum (default: all 1)."""
    use_kl_in_reward: bool = False
    """Subtract a KL(policy || reference) penalty from the reward; needs the reference model."""
    kl_penalty: KLKind = partly("kl", IMPLEMENTED_KL_KINDS)
    """KL estimator of the in-reward penalty: kl (k1), abs, mse (k2), low_var_kl (k3), full."""
    kl_ctrl: KLControl = KLControl()
    """The penalty's coefficient."""
    filter_groups: FilterGroups = FilterGroups()
    """DAPO dynamic sampling."""
    rollout_correction: RolloutCorrection = RolloutCorrection()
    """Off-policy correction between rollout and trainer."""
    max_staleness: int = Field(0, ge=0)
    """rlc's own key (verl's one-step-off recipe fixes it at 1): with hybrid_engine false, how many policy updates
    a batch's generating weights may lag behind the trainer. 0: generate, then train (on-policy); k >= 1: the
    rollout generates up to k steps ahead while the trainer trains (pipelined, off-policy by at most k)."""
    use_pf_ppo: bool = refused(False, "policy filtration PPO (pf_ppo) is not implemented in rlc")
    """Reweight samples by reward (PF-PPO)."""
    pf_ppo: PFPPO = PFPPO()
    """PF-PPO options."""
