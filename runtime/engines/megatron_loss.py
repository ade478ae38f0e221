"""Log-probs, entropy and sum of squared probabilities from vocabulary-parallel logits: each tensor-parallel rank
sees only its vocabulary slice.

The Megatron model's output layer is column parallel, so rank r of T holds the logits of tokens
`[r * V/T, (r+1) * V/T)` of the padded vocabulary. Nothing here gathers that dimension: log-probs come from
megatron-core's `vocab_parallel_cross_entropy`, and entropy from three all-reduces (max, sum of exp, sum of
exp x logit) over the tensor-parallel group, sum pi^2 likewise (max, sum of exp, sum of exp^2), so the largest
tensor a rank holds is its own slice for one micro-batch's response tokens.

Padded vocabulary rows (megatron rounds the vocabulary up; the converter fills them with zeros) would each add
exp(0) to the partition function, so `response_logits` masks them. It uses a large finite negative rather than
-inf: exp of it underflows to exactly 0, and 0 x (-1e9) stays 0 where 0 x (-inf) would make the entropy NaN.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from megatron.core import parallel_state, tensor_parallel

PADDED_LOGIT = -1e9


def response_logits(logits: torch.Tensor, temperature: float, vocab_size: int) -> torch.Tensor:
    """A new fp32 tensor [b, n, V/T] of `logits` (the model's output at the n positions that predict response
    tokens) divided by the temperature (as the rollout samples them), this rank's padded vocabulary columns
    masked."""
    scaled = logits.float() / temperature
    width = scaled.shape[-1]
    first = parallel_state.get_tensor_model_parallel_rank() * width
    if first + width > vocab_size:
        scaled[..., max(0, vocab_size - first):] = PADDED_LOGIT
    return scaled


def vocab_parallel_log_probs(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log p(label) per position. megatron's cross-entropy overwrites its fp32 input with the softmax to save
    memory: pass a tensor that nothing else reads (a fresh `response_logits`)."""
    return -tensor_parallel.vocab_parallel_cross_entropy(logits, labels)


class _VocabParallelEntropy(torch.autograd.Function):
    """H = log Z - E_p[l] over the whole vocabulary, with the logits l split over the tensor-parallel ranks.

    The backward needs only this rank's logits and two per-position scalars, since dH/dl_k = -p_k (l_k - E_p[l]).
    H is the same on every rank, so each rank's gradient is the one for its own slice.
    """

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, logits: torch.Tensor) -> torch.Tensor:
        group = parallel_state.get_tensor_model_parallel_group()
        shift = logits.max(dim=-1).values
        dist.all_reduce(shift, op=dist.ReduceOp.MAX, group=group)
        shifted = logits - shift.unsqueeze(-1)
        exp = shifted.exp()
        total, weighted = exp.sum(-1), (exp * shifted).sum(-1)
        del exp, shifted
        dist.all_reduce(total, group=group)
        dist.all_reduce(weighted, group=group)
        mean_shifted = weighted / total
        ctx.save_for_backward(logits, shift + total.log(), shift + mean_shifted)
        return total.log() - mean_shifted

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> torch.Tensor:
        logits, log_z, mean_logit = ctx.saved_tensors
        probs = (logits - log_z.unsqueeze(-1)).exp()
        return -probs * (logits - mean_logit.unsqueeze(-1)) * grad.unsqueeze(-1)


def vocab_parallel_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy per position of softmax over the whole vocabulary, from this rank's slice; differentiable."""
    return _VocabParallelEntropy.apply(logits)


@torch.no_grad()
def vocab_parallel_sum_pi_squared(logits: torch.Tensor) -> torch.Tensor:
    """sum_v p_v^2 per position over the whole vocabulary, from this rank's slice: with m the global maximum,
    sum_v exp(2 (l_v - m)) / (sum_v exp(l_v - m))^2, both sums all-reduced over the tensor-parallel group."""
    group = parallel_state.get_tensor_model_parallel_group()
    shift = logits.max(dim=-1).values
    dist.all_reduce(shift, op=dist.ReduceOp.MAX, group=group)
    exp = (logits - shift.unsqueeze(-1)).exp()
    total, squares = exp.sum(-1), exp.square().sum(-1)
    del exp
    dist.all_reduce(total, group=group)
    dist.all_reduce(squares, group=group)
    return squares / total.square()
