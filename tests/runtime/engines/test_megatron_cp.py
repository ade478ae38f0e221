"""The context-parallel layout (`megatron_cp`): which positions a rank holds and which keys its queries may see,
against hand-worked values. The attention itself, its gradients and whole engines at context parallel 2 run on
two ranks in `test_megatron_engine.py`."""

from __future__ import annotations

import torch

from rlc_runtime.engines.megatron_cp import attention_mask, cp_positions, key_positions


def test_each_rank_holds_chunks_r_and_2cp_minus_1_minus_r() -> None:
    # 12 positions, cp 3: 6 chunks of 2; rank 0 takes chunks 0 and 5, rank 1 chunks 1 and 4, rank 2 chunks 2 and 3
    assert [cp_positions(12, 3, r).tolist() for r in range(3)] == [[0, 1, 10, 11], [2, 3, 8, 9], [4, 5, 6, 7]]
    assert key_positions(12, 3).tolist() == [0, 1, 10, 11, 2, 3, 8, 9, 4, 5, 6, 7]  # gathered in rank order
    assert cp_positions(5, 1, 0).tolist() == [0, 1, 2, 3, 4]  # cp 1: the whole sequence, no padding needed


def test_the_mask_hides_later_positions_and_padding_in_gathered_key_order() -> None:
    keep = torch.tensor([[0, 1, 1, 1, 1, 1, 1, 0]])  # one left-padding and one right-padding position
    mask = attention_mask(keep, 2, 1)  # rank 1 of 2: positions 2, 3, 4, 5; keys in order 0 1 6 7 2 3 4 5
    hidden = [[1, 0, 1, 1, 0, 1, 1, 1],  # query 2 sees keys 1 and 2 (0 is padding)
              [1, 0, 1, 1, 0, 0, 1, 1],  # query 3: 1, 2, 3
              [1, 0, 1, 1, 0, 0, 0, 1],  # query 4: 1 to 4
              [1, 0, 1, 1, 0, 0, 0, 0]]  # query 5: 1 to 5; never 6 (later) or 7 (later, and padding)
    assert mask.shape == (1, 1, 4, 8)
    assert mask[0, 0].int().tolist() == hidden
