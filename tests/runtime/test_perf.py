"""MFU's FLOP count against a count done by hand for a small model, and the peak table."""

from __future__ import annotations

import pytest

from rlc_runtime.perf import mfu, peak_flops, update_flops

MODEL = dict(vocab_size=100, hidden_size=8, intermediate_size=16, num_hidden_layers=2, num_attention_heads=2,
             num_key_value_heads=1)


def test_flops_count_every_matmul_six_times_per_token_plus_attention() -> None:
    # per layer: q 8x8, k 8x4, v 8x4, o 8x8 = 192; mlp gate, up, down 3 x 8x16 = 384; embeddings + head 2 x 100x8
    dense = (192 + 384) * 2 + 1600
    attention = 12 * (3 * 3 + 5 * 5) * 2 * 4 * 2  # seqlen^2 summed, heads x head_dim, layers
    assert update_flops(MODEL, [3, 5]) == 6 * dense * 8 + attention


def test_mfu_is_the_fraction_of_the_gpus_peak() -> None:
    flops = update_flops(MODEL, [4])
    assert mfu(MODEL, [4], passes=2, seconds=0.5, gpus=4, peak=flops) == pytest.approx(2 / (0.5 * 4))


def test_peak_is_known_for_hopper_and_unknown_elsewhere() -> None:
    assert peak_flops("NVIDIA H200") == 989e12
    assert peak_flops("cpu") is None
