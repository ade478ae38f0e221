"""`trainer`: the run's length, cluster shape, logging, checkpoints and resumption."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from rlc.config.base import Section, unimplemented

Logger = Literal["console", "jsonl", "tensorboard", "wandb", "mlflow", "swanlab", "vemlp_wandb", "clearml"]
IMPLEMENTED_LOGGERS = ("console", "jsonl", "tensorboard", "wandb")


class Trainer(Section):
    balance_batch: bool = True
    total_epochs: int = Field(30, ge=1)
    total_training_steps: int | None = Field(None, ge=1)
    project_name: str = "verl_examples"
    experiment_name: str = "gsm8k"
    logger: list[Logger] | Logger = ["console", "jsonl"]  # verl accepts `trainer.logger=console` too
    log_val_generations: int = 0
    rollout_data_dir: str | None = None
    validation_data_dir: str | None = None
    nnodes: int = Field(1, ge=1)
    n_gpus_per_node: int = Field(8, ge=1)
    device: Literal["cuda", "cpu"] = "cuda"
    save_freq: int = -1
    resume_mode: Literal["auto", "disable", "resume_path"] = "auto"
    resume_from_path: str | None = None
    val_before_train: bool = True
    val_only: bool = False
    test_freq: int = -1
    critic_warmup: int = Field(0, ge=0)
    default_hdfs_dir: str | None = unimplemented(None, "HDFS checkpoint copies are not implemented")
    del_local_ckpt_after_load: bool = False
    default_local_dir: str = "checkpoints/${trainer.project_name}/${trainer.experiment_name}"
    max_actor_ckpt_to_keep: int | None = Field(None, ge=1)
    max_critic_ckpt_to_keep: int | None = Field(None, ge=1)
    ray_wait_register_center_timeout: int = 300
    seed: int = 42
    gpu_memory_gb: float | None = Field(
        None, gt=0, description="rlc: each GPU's memory in GiB, for the memory estimate (default: nvidia-smi's)")

    @field_validator("logger")
    @classmethod
    def _as_list(cls, value: list[str] | str) -> list[str]:
        return [value] if isinstance(value, str) else value
