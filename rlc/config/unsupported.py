"""verl's sections that rlc knows but does not run: distillation, rollout skipping (replay of dumped rollouts) and
the TransferQueue data plane.

Each has one switch, refused when on; its other keys matter to verl only with the switch on, so they are accepted
quietly while it is off (`only_with`) and listed in the key table.
"""

from typing import Any

from rlc.config.base import Section, instead, refused

DISTILLATION = "distillation from teacher models is not implemented in rlc"
SKIP = "replaying dumped rollouts is not implemented in rlc"
TRANSFER_QUEUE = "TransferQueue is not implemented in rlc; the controller passes batches itself"


class Distillation(Section):
    """On-policy distillation from teacher models."""

    enabled: bool = refused(False, DISTILLATION)
    """Add a distillation loss against the teachers."""
    distillation_loss: dict[str, Any] | None = instead(None, DISTILLATION, only_with=".enabled")
    """The distillation loss: loss_mode, topk, coefficients, clamps, clip ratios."""
    n_gpus_per_node: int = instead(8, DISTILLATION, only_with=".enabled")
    """GPUs per node of the teachers' pool."""
    nnodes: int = instead(0, DISTILLATION, only_with=".enabled")
    """Nodes of the teachers' pool."""
    teacher_models: dict[str, Any] | None = instead(None, DISTILLATION, only_with=".enabled")
    """The teachers: model_path, replicas and inference settings of each."""
    teacher_key: str = instead("data_source", DISTILLATION, only_with=".enabled")
    """Data column choosing a sample's teacher."""


class SkipStage(Section):
    """Dump a stage's output, or replay a dump instead of running it."""

    enable: bool = refused(False, SKIP)
    """Skip this stage on the listed steps."""
    dump_dir: str = instead("~/.verl/rollout_dump", SKIP, only_with=".enable")
    """Where dumps are written and read."""
    steps: list[int] = instead([], SKIP, only_with=".enable")
    """Steps to skip."""
    action: str = instead("cache", SKIP, only_with=".enable")
    """cache (dump, then replay) or another action."""


class Skip(Section):
    """verl's skip manager: replay dumped rollouts instead of generating."""

    rollout: SkipStage = SkipStage()
    """The synchronous rollout."""
    rollout_tq: SkipStage = SkipStage()
    """The rollout through TransferQueue."""
    async_rollout: SkipStage = SkipStage()
    """The asynchronous rollout."""


class TransferQueue(Section):
    """verl's TransferQueue data plane."""

    enable: bool = refused(False, TRANSFER_QUEUE)
    """Move batches between workers through TransferQueue."""
    metrics: dict[str, Any] | None = instead(None, TRANSFER_QUEUE, only_with=".enable")
    """Metrics of the queue (enabled, port)."""
    backend: dict[str, Any] | None = instead(None, TRANSFER_QUEUE, only_with=".enable")
    """Storage backend: SimpleStorage or MooncakeStore, with their options."""
