"""Rollout helpers: samples into verl's padded layout, prompt slices per rank, sampling parameters from config."""

from __future__ import annotations

import torch

from rlc.config.defaults import fill_defaults
from rlc.config.root import RLCConfig
from rlc_runtime.rollout.base import Generation
from rlc_runtime.workers.rollout import build_batch, sampling_params, split_prompts


def test_build_batch_layout() -> None:
    prompts = [[5, 6], [7, 8, 9]]
    generations = [Generation(0, [11, 2], [-0.5, -0.25], "stop"), Generation(1, [12], [-1.0], "length"),
                   Generation(1, [13, 14, 15, 16], [-1.0] * 4, "length")]
    batch = build_batch(prompts, generations, pad_id=0, max_response_length=3)
    assert batch.input_ids.tolist() == [[0, 5, 6, 11, 2, 0], [7, 8, 9, 12, 0, 0], [7, 8, 9, 13, 14, 15]]
    assert batch.attention_mask.tolist() == [[0, 1, 1, 1, 1, 0], [1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]]
    assert batch.position_ids.tolist() == [[0, 0, 1, 2, 3, 3], [0, 1, 2, 3, 3, 3], [0, 1, 2, 3, 4, 5]]
    assert batch.responses.tolist() == [[11, 2, 0], [12, 0, 0], [13, 14, 15]]  # truncated to 3
    assert batch.response_mask.tolist() == [[1, 1, 0], [1, 0, 0], [1, 1, 1]]
    assert torch.equal(batch.rollout_log_probs[0], torch.tensor([-0.5, -0.25, 0.0]))
    assert batch.meta["uid"] == [0, 1, 1] and batch.prompt_length == 3


def test_split_prompts() -> None:
    assert split_prompts(5, 2) == [range(0, 3), range(3, 5)]
    assert split_prompts(1, 3) == [range(0, 1), range(1, 1), range(1, 1)]


def test_sampling_params_follow_verl() -> None:
    cfg = fill_defaults(RLCConfig.model_validate({
        "data": {"train_files": "x.jsonl", "max_response_length": 7},
        "actor_rollout_ref": {"model": {"path": "m"}, "rollout": {"n": 4, "temperature": 0.8, "top_p": 0.9,
                                                                  "val_kwargs": {"n": 2}}}}))
    train = sampling_params(cfg, seed=3)
    assert (train.n, train.temperature, train.top_p, train.max_tokens, train.seed) == (4, 0.8, 0.9, 7, 3)
    greedy = sampling_params(cfg, validate=True)  # val_kwargs.do_sample is false by default
    assert (greedy.n, greedy.temperature) == (1, 0.0)
    cfg.actor_rollout_ref.rollout.val_kwargs.do_sample = True
    cfg.actor_rollout_ref.rollout.val_kwargs.temperature = 0.5
    sampled = sampling_params(cfg, validate=True)
    assert (sampled.n, sampled.temperature) == (2, 0.5)
