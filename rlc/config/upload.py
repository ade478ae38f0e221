"""`hf_upload`: push the final checkpoint (and, if asked, checkpoints during training) to the Hugging Face Hub."""

from typing import Literal

from pydantic import Field

from rlc.config.base import Section


class HFUpload(Section):
    """rlc: push the trained model to the Hugging Face Hub at the end of the run, and optionally during it."""

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
    every_n_saves: int = Field(0, ge=0)
    """Also push every N-th checkpoint saved during training, one commit each (0: only the final one). A push that
    fails is logged and tried again at the next save; it never fails the run."""
    on_best_val: bool = False
    """Also push after a validation whose score (val-core/all/reward/mean@N) is the best of the run so far; the
    checkpoint is saved for it if trainer.save_freq would not."""
