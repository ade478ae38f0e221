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

        cfg = RLCConfig.model_validate(config)
        self.manager = RewardManager(cfg)
        algorithm = cfg.algorithm
        self.component_keys = (algorithm.gdpo_reward_keys or []) if algorithm.adv_estimator == "gdpo" else []

    def ready(self) -> bool:
        return True

    def score(self, samples: list[dict[str, Any]],
              step: int | None) -> tuple[list[float], dict[str, float], float, list[list[float]]]:
        """Scores in sample order, reward metrics, the seconds scoring took (`timing_s/reward`), and GDPO's
        reward components ([K][B], empty unless adv_estimator is gdpo). `step` is None for validation (its
        records are not saved as a training step's)."""
        start = time.perf_counter()
        scores, metrics, components = self.manager.score(samples, step, self.component_keys if step is not None
                                                         else ())
        return scores, metrics, time.perf_counter() - start, components
