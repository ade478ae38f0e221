"""DAPO's overlong penalty and group filter, against values worked out by hand."""

import pytest
import torch

from rlc_runtime.algorithms.dapo import overlong_penalty, varied_groups


def test_overlong_penalty_grows_linearly_in_the_buffer() -> None:
    # max 10, buffer 4 (from length 6), factor 1: lengths 5, 6, 8, 10 -> 0, 0, -0.5, -1.
    penalty = overlong_penalty(torch.tensor([5, 6, 8, 10]), 10, 4, 1.0)
    assert penalty.tolist() == pytest.approx([0.0, 0.0, -0.5, -1.0])
    with pytest.raises(ValueError, match="must be positive"):
        overlong_penalty(torch.tensor([1]), 10, 0, 1.0)


def test_only_groups_with_varied_scores_are_kept() -> None:
    # group 0 all 1s, group 1 mixed, group 2 alone: only group 1 carries a learning signal.
    assert varied_groups(torch.tensor([1.0, 1.0, 0.0, 1.0, 0.0]), [0, 0, 1, 1, 2]) == [1]
    assert varied_groups(torch.tensor([0.0, 0.0]), [5, 5]) == []
