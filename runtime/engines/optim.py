"""AdamW and verl's learning-rate schedules: linear warmup, then constant, cosine or linear decay.

One schedule for every backend: the shared update (`engines.update`) asks it for the factor at its update count and
hands the engine the learning rate. The run's length comes in `optim.total_training_steps`, which the trainer
fills in from the data set's size before it builds the engines.
Warmup and cosine follow `verl.utils.torch_functional` exactly (the first warmup step runs at lr 0, as there);
`linear` decays from the peak to `min_lr_ratio` over the remaining steps.
"""

from __future__ import annotations

import math
from typing import Any

import torch


class Schedule:
    """The lr factor at step `step` (0-based), for `kind` in constant | cosine | linear."""

    def __init__(self, kind: str, warmup_steps: int, warmup_ratio: float, total_steps: int, min_lr_ratio: float,
                 num_cycles: float) -> None:
        self.kind, self.min_lr_ratio, self.num_cycles = kind, min_lr_ratio, num_cycles
        self.total = max(0, total_steps)
        # verl: lr_warmup_steps wins when positive, else the ratio of the total (0 when the total is unknown).
        self.warmup = warmup_steps if warmup_steps > 0 else int(warmup_ratio * self.total)

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return step / max(1, self.warmup)
        if self.kind == "constant" or self.total <= 0:
            return 1.0
        progress = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        if self.kind == "cosine":
            value = math.cos(math.pi * self.num_cycles * 2.0 * progress)
            return max(self.min_lr_ratio, value * (1 - self.min_lr_ratio) * 0.5 + (1 + self.min_lr_ratio) * 0.5)
        return self.min_lr_ratio + (1 - self.min_lr_ratio) * (1 - progress)


def build_optimizer(params: Any, optim: Any, fused: bool) -> torch.optim.AdamW:
    """AdamW from an `Optim` section (`fused`: one kernel per step, CUDA parameters only); the update sets its
    learning rate before each step."""
    extra = dict(optim.override_optimizer_config or {})
    return torch.optim.AdamW(params, lr=optim.lr, betas=tuple(optim.betas), weight_decay=optim.weight_decay,
                             fused=fused, **extra)
