"""Hub uploads of a run (seed 001): checkpoints, in Hugging Face format, pushed to `repo_id`, one commit each.

The final checkpoint is pushed after training; with `hf_upload.every_n_saves` or `on_best_val`, checkpoints are
also pushed as they are saved (`UploadSchedule` says when). A push never fails the run: every problem is reported
with the checkpoint's location and the command that retries it by hand (`rlc upload`), and a failed push during
training is tried again at the next save (with that newer checkpoint).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rlc.config.root import RLCConfig
from rlc.files import write_atomic
from rlc.upload import UploadError, UploadTarget, card_for, prepare_folder, upload_folder


@dataclass
class UploadSchedule:
    """Which saves are pushed: every `every`-th, one after the best validation score so far, the one after a
    failed push, and the last."""

    every: int = 0
    on_best: bool = False
    saves: int = 0
    best: float | None = None
    retry: bool = False

    def improves(self, score: float | None) -> bool:
        return self.on_best and score is not None and (self.best is None or score > self.best)

    def due(self, score: float | None) -> str | None:
        """Called at each save during training (the final push is the trainer's): why to push it, or None."""
        self.saves += 1
        reasons = [why for why, yes in (
            (f"the best validation score so far ({score:g})" if score is not None else "", self.improves(score)),
            (f"save {self.saves} (every {self.every})", bool(self.every) and self.saves % self.every == 0),
            ("retrying the failed push", self.retry)) if yes]
        if self.improves(score):
            self.best = score
        return "; ".join(reasons) or None

    def pushed(self, ok: bool) -> None:
        self.retry = not ok


def upload_checkpoint(cfg: RLCConfig, checkpoint: Path, run_dir: Path, what: str = "final checkpoint") -> str | None:
    settings = cfg.hf_upload
    target = UploadTarget.of(settings.repo_id or "", settings.organization, settings.private)
    full = settings.optimizer_save_mode == "full"
    actor = Path(checkpoint) / "actor"
    try:
        folder = actor / "huggingface" if (actor / "huggingface" / "config.json").exists() else actor
        folder = prepare_folder(folder, cfg.actor_rollout_ref.model.path, include_optimizer=full)
        if full and not (folder / "optimizer.pt").exists():
            _write_optimizer(actor, folder)
        write_atomic(folder / "README.md", card_for(folder, target.repo_id, None, full))
        url = upload_folder(folder, target, include_optimizer=full, max_retries=settings.max_retries,
                            commit_message=f"rlc: {cfg.trainer.experiment_name} {what}")
    except UploadError as err:
        print(f"rlc_runtime: hf_upload failed: {err}\n  the checkpoint is safe at {checkpoint}; retry with:\n"
              f"  rlc upload {actor} --repo-id {target.repo_id}", flush=True)
        return None
    print(f"rlc_runtime: uploaded {folder} to {url}", flush=True)
    return url


def _write_optimizer(actor: Path, folder: Path) -> None:
    """optimizer.pt gathered from every rank's optimizer shard, keyed by parameter name."""
    import torch

    from rlc_runtime.export import CheckpointError, consolidate_optimizer, load_shard, parameter_names, shard_files

    try:
        shards = [load_shard(p) for p in shard_files(actor, "optim")]
        names = parameter_names(actor, folder)
        torch.save(consolidate_optimizer(shards, names), folder / "optimizer.pt.partial")
    except CheckpointError as err:
        raise UploadError(f"cannot gather the optimizer state: {err}") from None
    (folder / "optimizer.pt.partial").rename(folder / "optimizer.pt")
