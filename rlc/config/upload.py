"""`hf_upload`: push the final checkpoint to the Hugging Face Hub (seed 001)."""

from typing import Literal

from pydantic import Field

from rlc.config.base import Section


class HFUpload(Section):
    """rlc: push the trained model to the Hugging Face Hub at the end of the run."""

    enabled: bool = False
    """Upload when training ends."""
    repo_id: str | None = None
    """Hub repo: `name` (under the token's user or organization) or `owner/name`."""
    organization: str | None = None
    """Owner of the repo when repo_id has none."""
    private: bool = False
    """Create the repo private."""
    optimizer_save_mode: Literal["full"] | None = "full"
    """Also upload the optimizer state (full), or not (null)."""
    max_retries: int = Field(3, ge=0)
    """Retries of a failed upload."""
