"""Where rewards come from: rule functions by data source, a custom function, or a remote server (seed 003)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from rlc.config.base import Section, unimplemented


class CustomRewardFunction(Section):
    path: str | None = None
    name: str = "compute_score"


class OverlongBuffer(Section):
    enable: bool = Field(False, description="DAPO overlong shaping: penalise responses in the last `len` tokens")
    len: int = Field(0, ge=0, description="Tokens before max_response_length where the penalty starts")
    penalty_factor: float = Field(1.0, ge=0, description="Penalty at max_response_length, growing linearly to it")
    log: bool = Field(False, description="Log the penalty's share (rlc always logs it)")


class RewardModel(Section):
    enable: bool = unimplemented(False, "model-based rewards are not implemented; use reward_api", error=True)
    reward_manager: str = "naive"
    model: dict | None = None
    micro_batch_size_per_gpu: int | None = None
    overlong_buffer: OverlongBuffer = OverlongBuffer()


class RewardAPI(Section):
    enable: bool = False
    api_url: str | None = Field(None, description="Base URL of an rl_verifier-compatible server")
    max_workers: int = Field(20, ge=1, le=1024)
    timeout: float = Field(30, gt=0)
    max_retries: int = Field(3, ge=0)
    on_failure: Literal["error", "zero"] = Field(
        "error", description="A sample that still fails after retries: fail the step, or score it 0 and count it"
    )
    verification_info_column: str = "verification_info"
    save_dir: str | None = None
    save_freq: int = 1
