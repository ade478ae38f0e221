"""The KL-in-reward coefficient: fixed, or adapted towards a target KL (Ziegler et al., as verl does)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class KLController:
    value: float
    target: float | None = None
    horizon: int = 10000

    def update(self, current_kl: float, n_steps: int) -> None:
        if self.target is None:
            return
        error = max(-0.2, min(0.2, current_kl / self.target - 1))
        self.value *= 1 + error * n_steps / self.horizon


def make_kl_controller(cfg: Any) -> KLController:
    """`cfg` is `algorithm.kl_ctrl`."""
    target = cfg.target_kl if cfg.type == "adaptive" else None
    return KLController(cfg.kl_coef, target, cfg.horizon)
