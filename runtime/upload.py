"""The end-of-training Hub upload (seed 001): the last checkpoint, in Hugging Face format, pushed to `repo_id`.

Called by the trainer after the final checkpoint is on disk. It never fails the run: every problem is reported
with the checkpoint's location and the command that retries the upload by hand (`rlc upload`).
"""

from __future__ import annotations

from pathlib import Path

from rlc.config.root import RLCConfig
from rlc.files import write_atomic
from rlc.upload import UploadError, UploadTarget, card_for, prepare_folder, upload_folder


def upload_final(cfg: RLCConfig, checkpoint: Path, run_dir: Path) -> str | None:
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
                            commit_message=f"rlc: {cfg.trainer.experiment_name} final checkpoint")
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
