"""Batches generated apart, widened and concatenated, equal the batch built from all their samples at once."""

import pytest
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


def test_chunk_refuses_a_split_that_would_leave_rows_out() -> None:
    prompts = [[5, 6], [7, 8]]
    batch = build_batch(prompts, [Generation(i % 2, [11], [-0.5], "stop") for i in range(6)], 0, 8)
    assert [len(part) for part in batch.chunk(3)] == [2, 2, 2]
    with pytest.raises(ValueError, match="6 samples does not split into 4"):
        batch.chunk(4)
