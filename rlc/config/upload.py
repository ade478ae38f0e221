"""`hf_upload`: push the final checkpoint to the Hugging Face Hub (seed 001)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from rlc.config.base import Section


class HFUpload(Section):
    enabled: bool = False
    repo_id: str | None = None
    organization: str | None = None
    private: bool = False
    optimizer_save_mode: Literal["full"] | None = "full"
    max_retries: int = Field(3, ge=0)
