"""DAPO (Yu et al. 2025) outside the loss: overlong reward shaping and dynamic sampling's group filter.

Overlong shaping (`reward_model.overlong_buffer`): a response whose length L enters the last `len` tokens before
max_response_length M loses penalty_factor x (L - (M - len)) / len, growing linearly to penalty_factor at M.
Dynamic sampling (`algorithm.filter_groups`): a prompt whose samples all score alike gives every sample a zero
group-relative advantage, so it only dilutes the batch; such groups are dropped and more are generated.
"""

from __future__ import annotations

import torch


def overlong_penalty(response_lengths: torch.Tensor, max_response_length: int, buffer_len: int,
                     penalty_factor: float) -> torch.Tensor:
    """Per response, the (non-positive) reward added by DAPO's soft overlong punishment."""
    if buffer_len <= 0:
        raise ValueError("reward_model.overlong_buffer.len must be positive when the buffer is enabled")
    exceed = response_lengths.float() - (max_response_length - buffer_len)
    return (-exceed / buffer_len * penalty_factor).clamp(max=0.0)


def varied_groups(scores: torch.Tensor, uids: list[int]) -> list[int]:
    """The group ids (in first-seen order) whose scores are not all equal: a group of one is never kept, its
    sample standard deviation being undefined (verl keeps a prompt only when std > 0)."""
    by_group: dict[int, list[float]] = {}
    for uid, score in zip(uids, scores.tolist(), strict=True):
        by_group.setdefault(uid, []).append(score)
    return [uid for uid, values in by_group.items() if len(values) > 1 and max(values) > min(values)]
