"""`algorithm`: advantage estimation and the KL-in-reward controller (verl's names and defaults)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from rlc.config.base import Section, unimplemented

AdvEstimator = Literal["gae", "grpo", "reinforce_plus_plus", "rloo", "remax", "grpo_passk", "opo", "gpg"]
IMPLEMENTED_ESTIMATORS = ("gae", "grpo", "rloo", "reinforce_plus_plus")


class KLControl(Section):
    type: Literal["fixed", "adaptive"] = "fixed"
    kl_coef: float = Field(0.001, ge=0)
    horizon: int = Field(10000, gt=0)
    target_kl: float = Field(0.1, gt=0)


class FilterGroups(Section):
    enable: bool = unimplemented(False, "dynamic sampling (DAPO filter_groups) is not implemented", error=True)
    metric: str | None = "reward"
    max_num_gen_batches: int = 0
    max_inflight_gen_batches: int = 1


class Algorithm(Section):
    adv_estimator: AdvEstimator = "gae"
    gamma: float = Field(1.0, ge=0, le=1)
    lam: float = Field(1.0, ge=0, le=1)
    norm_adv_by_std_in_grpo: bool = True
    use_kl_in_reward: bool = False
    kl_penalty: Literal["kl", "k1", "abs", "mse", "k2", "low_var_kl", "k3"] = "kl"
    kl_ctrl: KLControl = KLControl()
    filter_groups: FilterGroups = FilterGroups()
    use_pf_ppo: bool = unimplemented(False)
