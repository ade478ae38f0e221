"""The reward worker: a Ray actor off the controller, so that scoring overlaps the trainer's log-prob passes.

Rule functions (math-verify can take a while per sample) and remote calls (hundreds in flight) both run here;
the controller submits a step's samples right after generation and collects the scores when it needs them.
"""

from __future__ import annotations

import time
from typing import Any

from rlc_runtime.rewards.manager import RewardManager


class RewardWorker:
    def __init__(self, rank: int, world_size: int, device: str, config: dict[str, Any]) -> None:
        from rlc.config.root import RLCConfig

        self.manager = RewardManager(RLCConfig.model_validate(config))

    def ready(self) -> bool:
        return True

    def score(self, samples: list[dict[str, Any]], step: int | None) -> tuple[list[float], dict[str, float], float]:
        """Scores in sample order, reward metrics, and the seconds scoring took (`timing_s/reward`).
        `step` is None for validation (its records are not saved as a training step's)."""
        start = time.perf_counter()
        scores, metrics = self.manager.score(samples, step)
        return scores, metrics, time.perf_counter() - start
