"""Batches generated apart, widened and concatenated, equal the batch built from all their samples at once."""

import torch

from rlc_runtime.batch import TokenBatch, pad_to
from rlc_runtime.rollout.base import Generation
from rlc_runtime.workers.rollout import build_batch


def test_padded_concatenation_equals_building_once() -> None:
    prompts = [[5, 6], [7, 8, 9, 10]]
    first = [Generation(0, [11], [-0.5], "stop")]
    second = [Generation(1, [12, 13, 14], [-0.1, -0.2, -0.3], "length")]
    a, b = build_batch(prompts, first, 0, 8), build_batch(prompts, second, 0, 8)
    joined = TokenBatch.concat([pad_to(a, 4, 3, 0), pad_to(b, 4, 3, 0)])
    whole = build_batch(prompts, first + second, 0, 8)
    for name in ("input_ids", "attention_mask", "position_ids", "responses", "response_mask", "rollout_log_probs"):
        assert torch.equal(getattr(joined, name), getattr(whole, name)), name
