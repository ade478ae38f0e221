"""Statistics over the response tokens of a padded [B, T] batch: sums, means, variance and whitening.

Padded positions are selected out with `torch.where` before anything is summed, not only multiplied by a zero
mask: a NaN or inf sitting in padding (a log-prob of a pad token, say) would otherwise turn the sum into NaN.
An empty mask gives zeros rather than NaN, so a micro-batch whose rows are all padding contributes nothing.
"""

from __future__ import annotations

import torch

_TINY = 1e-8  # below any real token count, so a mean over >= 1 token is exact and an empty one is 0 / tiny = 0


def masked_sum(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    selected = torch.where(mask.bool(), values, torch.zeros_like(values)) * mask
    return selected.sum() if dim is None else selected.sum(dim)


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    count = mask.sum() if dim is None else mask.sum(dim)
    return masked_sum(values, mask, dim) / count.clamp(min=_TINY)


def masked_var(values: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance over the whole mask; Bessel's correction when more than one token is selected (as verl)."""
    variance = masked_mean((values - masked_mean(values, mask)) ** 2, mask)
    count = mask.sum()
    if unbiased and count > 1:
        variance = variance * count / (count - 1)
    return variance


def masked_whiten(values: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """(values - mean) / std over the selected tokens, for every position (callers mask the result).

    verl raises on a mask of 0 or 1 tokens; here a lone token has no spread to normalise by and whitens to 0,
    so one short batch cannot stop a run."""
    return (values - masked_mean(values, mask)) * torch.rsqrt(masked_var(values, mask) + eps)
