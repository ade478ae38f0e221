"""`trainer`: the run's length, cluster shape, logging, checkpoints and resumption."""

from typing import Any, Literal

from pydantic import Field, field_validator

from rlc.config.base import Section, instead, partly, refused

Logger = Literal["console", "jsonl", "tensorboard", "wandb", "mlflow", "swanlab", "vemlp_wandb", "clearml"]
IMPLEMENTED_LOGGERS = ("console", "jsonl", "tensorboard", "wandb")
DEVICES = ("cuda", "cpu", "npu")
IMPLEMENTED_DEVICES = ("cuda", "cpu")


ASYNC_MODE = ".trainer_mode!=sync"
ASYNC_TRAINER = "used only by verl's asynchronous trainer modes, which rlc does not implement"


class TrainerV1(Section):
    """verl's V1 trainer: synchronous, or asynchronous with the rollout colocated or separate."""

    trainer_mode: str = partly("sync", ("sync",), "asynchronous training is not implemented in rlc yet")
    """sync, colocate_async or separate_async."""
    sync: dict[str, Any] = instead({}, "rlc's synchronous trainer takes no options")
    """Options of the synchronous mode."""
    colocate_async: dict[str, Any] | None = instead(None, ASYNC_TRAINER, only_with=ASYNC_MODE)
    """Options of the colocated asynchronous mode (num_warmup_batches)."""
    separate_async: dict[str, Any] | None = instead(None, ASYNC_TRAINER, only_with=ASYNC_MODE)
    """Options of the separate asynchronous mode (hybrid rollout switching, parameter sync steps)."""
    sampler: dict[str, Any] | None = instead(None, ASYNC_TRAINER, only_with=ASYNC_MODE)
    """Off-policy sample selection (max_off_policy_strategy, custom samplers)."""


class Trainer(Section):
    """The training run: length, cluster shape, logging, checkpoints, resumption."""

    balance_batch: bool = True
    """Reorder samples so that every data-parallel rank gets a similar number of tokens."""
    total_epochs: int = Field(30, ge=1)
    """Passes over the training prompts."""
    total_training_steps: int | None = Field(None, ge=1)
    """Stop after this many steps (default: total_epochs over the data)."""
    project_name: str = "verl_examples"
    """Project name for loggers and the default checkpoint directory."""
    experiment_name: str = "gsm8k"
    """Run name for loggers and the default checkpoint directory."""
    logger: list[Logger] | Logger = ["console", "jsonl"]  # verl accepts `trainer.logger=console` too
    """Metric sinks: console, jsonl, tensorboard, wandb (mlflow, swanlab, clearml are skipped with a warning)."""
    log_val_generations: int = 0
    """Validation generations to log per validation."""
    rollout_data_dir: str | None = None
    """Write each step's prompts, responses and scores here (jsonl)."""
    validation_data_dir: str | None = None
    """Write validation generations here (jsonl)."""
    nnodes: int = Field(1, ge=1)
    """Machines in the job."""
    n_gpus_per_node: int = Field(8, ge=1)
    """GPUs per machine that train (and, colocated, generate)."""
    device: Literal[DEVICES] = partly(  # type: ignore[valid-type]
        "cuda", IMPLEMENTED_DEVICES, "Ascend NPUs are not supported by rlc's runtime",
        substitutes={"npu": ("cuda", "rlc's runtime trains on CUDA GPUs; it cannot run on Ascend NPUs at all")})
    """Accelerator: cuda, or cpu (rlc: the tiny CPU runs); verl also runs npu."""
    save_freq: int = -1
    """Save a checkpoint every this many steps (-1: only at the end)."""
    esi_redundant_time: int = instead(0, "rlc does not watch an elastic instance's expiry; it saves every "
                                         "save_freq steps")
    """Seconds of margin to save before an elastic server instance shuts down."""
    resume_mode: Literal["auto", "disable", "resume_path"] = "auto"
    """auto: resume from the latest checkpoint if any; disable; resume_path: from resume_from_path."""
    resume_from_path: str | None = None
    """Checkpoint to resume from with resume_mode resume_path."""
    val_before_train: bool = True
    """Validate once before the first step."""
    val_only: bool = False
    """Validate, then stop."""
    test_freq: int = -1
    """Validate every this many steps (-1: never during training)."""
    critic_warmup: int = Field(0, ge=0)
    """Steps that train only the critic before the actor starts."""
    default_hdfs_dir: str | None = refused(None, "HDFS checkpoint copies are not implemented in rlc")
    """Copy checkpoints to this HDFS directory."""
    del_local_ckpt_after_load: bool = instead(False, "rlc keeps local checkpoints after loading them")
    """Delete the local checkpoint once it is loaded."""
    default_local_dir: str = "checkpoints/${trainer.project_name}/${trainer.experiment_name}"
    """Checkpoint directory."""
    max_actor_ckpt_to_keep: int | None = Field(None, ge=1)
    """Keep at most this many actor checkpoints (default: all)."""
    max_critic_ckpt_to_keep: int | None = Field(None, ge=1)
    """Keep at most this many critic checkpoints (default: all)."""
    ray_wait_register_center_timeout: int = instead(300, "rlc waits for its workers with its own placement "
                                                         "timeout")
    """Seconds to wait for verl's register center actor."""
    use_legacy_worker_impl: Literal["auto", "enable", "disable"] = instead(
        "auto", "rlc has one worker implementation")
    """verl: use the legacy fsdp/megatron workers or the new engine workers."""
    checkpoint_callback_class: str | None = refused(None, "checkpoint callbacks are not implemented in rlc")
    """A class (`pkg.module.Class`) whose on_save hook runs after each checkpoint."""
    use_v1: bool = instead(True, "rlc has one trainer")
    """verl: run the V1 trainer."""
    v1: TrainerV1 = TrainerV1()
    """Options of verl's V1 trainer."""
    seed: int = 42
    """rlc: base seed of model initialisation, shuffles and sampling."""
    gpu_memory_gb: float | None = Field(None, gt=0)
    """rlc: each GPU's memory in GiB, for the memory estimate (default: what nvidia-smi reports)."""

    @field_validator("logger")
    @classmethod
    def _as_list(cls, value: list[str] | str) -> list[str]:
        return [value] if isinstance(value, str) else value
