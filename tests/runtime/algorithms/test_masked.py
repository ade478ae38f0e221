"""Masked statistics: padding never leaks in, empty masks give zeros."""

import math

import torch

from rlc_runtime.algorithms.masked import masked_mean, masked_sum, masked_var, masked_whiten


def test_padding_values_never_leak() -> None:
    values = torch.tensor([[1.0, 3.0, math.nan], [5.0, -math.inf, math.inf]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    assert masked_sum(values, mask).item() == 9.0
    assert masked_mean(values, mask).item() == 3.0  # (1 + 3 + 5) / 3
    assert masked_mean(values, mask, dim=-1).tolist() == [2.0, 5.0]


def test_variance_and_whitening_by_hand() -> None:
    values, mask = torch.tensor([1.0, 2.0, 3.0, 100.0]), torch.tensor([1.0, 1.0, 1.0, 0.0])
    # mean 2, squared deviations 1, 0, 1: biased variance 2/3, unbiased 1
    assert masked_var(values, mask, unbiased=False).item() == torch.tensor(2 / 3).item()
    assert masked_var(values, mask).item() == 1.0
    assert torch.allclose(masked_whiten(values, mask)[:3], torch.tensor([-1.0, 0.0, 1.0]), atol=1e-6)


def test_empty_and_single_token_masks() -> None:
    values = torch.tensor([[4.0, 2.0]])
    assert masked_mean(values, torch.zeros(1, 2)).item() == 0.0
    assert masked_mean(values, torch.zeros(1, 2), dim=-1).tolist() == [0.0]
    assert masked_whiten(values, torch.tensor([[1.0, 0.0]]))[0, 0].item() == 0.0  # no spread: 0, not NaN
