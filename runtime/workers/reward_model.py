"""The reward model's ranks: a worker group of their own (topology.reward_model), each scoring its slice.

With more than one rank the model is sharded with FSDP2 over all of them (one `fully_shard` per decoder layer, as
the training engine does), so a reward model larger than one GPU still scores; every rank then runs the same
number of micro-batches (the controller hands each an equal slice), as the all-gathers of FSDP require.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from rlc_runtime.rewards.model import load_reward_model, reward_input_ids, score_ids, shard
from rlc_runtime.workers.group import RankWorker


class RewardModelWorker(RankWorker):
    def __init__(self, rank: int, world_size: int, device: str, config: dict[str, Any]) -> None:
        super().__init__(rank, world_size, device)
        from rlc.config.root import RLCConfig

        self.rm = RLCConfig.model_validate(config).reward_model
        self.model: Any = None

    def build(self) -> None:
        dtype = torch.bfloat16 if self.device == "cuda" else torch.float32
        model, self.tokenizer, self.head = load_reward_model(self.rm.model, dtype)
        self.model = shard(model, self.device, self.world_size) if self.world_size > 1 else model.to(self.device)

    def score(self, samples: list[dict[str, Any]]) -> tuple[list[float], float]:
        """Scores of this rank's samples (each: raw_prompt messages and response text) and the seconds taken."""
        start = time.perf_counter()
        sequences = [reward_input_ids(self.tokenizer, s["raw_prompt"], s["response"], self.rm.max_length)
                     for s in samples]
        scores = score_ids(self.model, self.head, sequences, self.tokenizer.pad_token_id,
                           self.rm.micro_batch_size_per_gpu, self.device)
        return scores, time.perf_counter() - start

