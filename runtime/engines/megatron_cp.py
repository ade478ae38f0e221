"""Context parallelism for the Megatron engine (`megatron.context_parallel_size` cp > 1) on megatron-core's local
layer spec.

megatron-core's context parallelism lives in Transformer Engine's attention; its local `DotProductAttention`
refuses cp > 1, and Transformer Engine exists neither on our CI machine nor on our GPU host. Everything else in
megatron-core already handles cp: `RotaryEmbedding` gives each rank the rotary angles of its own chunks
(`get_pos_emb_on_this_cp_rank`), the schedules multiply the loss by cp and DDP averages gradients over the
data x context ranks. So this module supplies the missing parts:

- The split, as megatron's `get_batch_on_this_cp_rank` makes it: the (padded) sequence in 2 cp equal chunks, rank r
  holding chunks r and 2cp-1-r, so that each rank gets as much causal-attention work as the others
  (`cp_positions`). The engine pads sequences to a multiple of 2 cp (times tp under sequence parallelism), as
  verl's megatron path does.
- `ContextParallelAttention`, plugged in as the layer spec's `core_attention`: each rank all-gathers the keys and
  values of the group (whose backward reduce-scatters their gradients) and attends from its own query chunks over
  the whole sequence. Which key each query may see (causal order and padding) comes in as the attention mask,
  built by `attention_mask` from the global positions: the mask, not the module, knows the chunk layout. The
  arithmetic is that of the local `DotProductAttention` (scaled scores, -10000 at masked keys, fp32 softmax),
  so cp 1 and cp 2 give the same numbers. Simple rather than fast: an all-gather of K/V, not ring attention, and
  scores are materialised, as the local spec does at cp 1 (each rank holds 1/cp of them).
- `SumOverRanks`: per-token outputs (log-probs, entropy, values) computed by each rank at its own positions,
  zero elsewhere, summed over the group. Every rank then computes the same loss from the same sum, so the
  gradient each rank needs for its own positions is the incoming one, unchanged; the parameter gradients of the
  ranks are partial sums that DDP adds up (it divides by dp x cp; the schedule multiplied the loss by cp).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.distributed as dist
from megatron.core import parallel_state, tensor_parallel
from megatron.core.transformer.module import MegatronModule

# megatron's `attention_mask_func` fills masked scores with this (not -inf: a fully masked row, a left-padding
# query, stays finite).
MASKED_SCORE = -10000.0


def cp_positions(length: int, cp: int, rank: int) -> torch.Tensor:
    """The global indices of the positions rank `rank` of `cp` holds, in its local order: chunks rank and
    2cp-1-rank of 2cp equal chunks (`length` must divide by 2cp); the whole sequence when cp is 1."""
    if cp == 1:
        return torch.arange(length)
    chunk = length // (2 * cp)
    first, second = rank * chunk, (2 * cp - 1 - rank) * chunk
    return torch.cat([torch.arange(first, first + chunk), torch.arange(second, second + chunk)])


def key_positions(length: int, cp: int) -> torch.Tensor:
    """The global positions of the keys `ContextParallelAttention` sees, in its order: the ranks' chunks, gathered
    in rank order."""
    return torch.cat([cp_positions(length, cp, r) for r in range(cp)])


def attention_mask(keep: torch.Tensor, cp: int, rank: int) -> torch.Tensor:
    """[b, 1, s/cp, s] True where a query of this rank must not see a key: a later position or padding. `keep`:
    [b, s] the (padded) attention mask, 1 for a real token; the mask is made on its device."""
    length = keep.shape[1]
    queries, keys = (t.to(keep.device) for t in (cp_positions(length, cp, rank), key_positions(length, cp)))
    later = keys[None, :] > queries[:, None]
    return later | ~keep.bool()[:, keys][:, None, None, :]


class _GatherSequence(torch.autograd.Function):
    """All-gather along dim 0 (the sequence of megatron's [s, b, heads, d]) in rank order; the backward
    reduce-scatters, so each rank gets the sum over ranks of the gradients of its own keys/values."""

    @staticmethod
    def forward(ctx: Any, local: torch.Tensor, group: dist.ProcessGroup) -> torch.Tensor:
        ctx.group = group
        local = local.contiguous()
        out = local.new_empty((local.shape[0] * dist.get_world_size(group), *local.shape[1:]))
        dist.all_gather_into_tensor(out, local, group=group)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        grad = grad.contiguous()
        out = grad.new_empty((grad.shape[0] // dist.get_world_size(ctx.group), *grad.shape[1:]))
        dist.reduce_scatter_tensor(out, grad, group=ctx.group)
        return out, None


class SumOverRanks(torch.autograd.Function):
    """The sum over the group of tensors that each rank filled at its own positions (zero elsewhere); the
    gradient passes through unchanged (module docstring)."""

    @staticmethod
    def forward(ctx: Any, local: torch.Tensor, group: dist.ProcessGroup) -> torch.Tensor:
        total = local.clone()
        dist.all_reduce(total, group=group)
        return total

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad, None


def gather_sequence(local: torch.Tensor, group: dist.ProcessGroup) -> torch.Tensor:
    return _GatherSequence.apply(local, group)


def sum_over_ranks(local: torch.Tensor, group: dist.ProcessGroup) -> torch.Tensor:
    return SumOverRanks.apply(local, group)


class ContextParallelAttention(MegatronModule):
    """Core attention of the local layer spec under context parallelism (module docstring). Takes what megatron's
    `SelfAttention` gives its core attention: query [s/cp, b, heads/tp, d], key and value [s/cp, b, groups/tp, d],
    the mask of `attention_mask`; returns [s/cp, b, heads/tp x d]."""

    def __init__(self, config: Any, layer_number: int, attn_mask_type: Any, attention_type: str,
                 attention_dropout: float | None = None, softmax_scale: float | None = None,
                 cp_comm_type: str | None = None, pg_collection: Any = None) -> None:
        super().__init__(config=config)
        if config.apply_query_key_layer_scaling or getattr(config, "softmax_type", "vanilla") != "vanilla":
            raise ValueError("context parallel attention supports plain softmax attention only")
        tp_group, cp_group = (getattr(pg_collection, name, None) for name in ("tp", "cp"))
        tp_group = tp_group if tp_group is not None else parallel_state.get_tensor_model_parallel_group()
        self.cp_group = cp_group if cp_group is not None else parallel_state.get_context_parallel_group()
        tp = dist.get_world_size(tp_group)
        self.heads, self.groups = config.num_attention_heads // tp, config.num_query_groups // tp
        self.scale = softmax_scale or 1.0 / math.sqrt(config.kv_channels)
        self.dropout = torch.nn.Dropout(config.attention_dropout if attention_dropout is None else attention_dropout)

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attention_mask: torch.Tensor,
                attn_mask_type: Any = None, attention_bias: Any = None, packed_seq_params: Any = None) -> torch.Tensor:
        if packed_seq_params is not None or attention_bias is not None:
            raise ValueError("context parallel attention takes neither packed sequences nor an attention bias")
        key, value = gather_sequence(key, self.cp_group), gather_sequence(value, self.cp_group)
        if self.heads > self.groups:  # grouped-query attention: each key/value head serves heads/groups queries
            key = key.repeat_interleave(self.heads // self.groups, dim=2)
            value = value.repeat_interleave(self.heads // self.groups, dim=2)
        q, k, v = (t.permute(1, 2, 0, 3) for t in (query, key, value))  # [b, heads, s, d]
        scores = torch.matmul(q, k.transpose(-1, -2)) * self.scale
        if self.config.attention_softmax_in_fp32:
            scores = scores.float()
        probs = torch.softmax(scores.masked_fill(attention_mask, MASKED_SCORE), dim=-1).to(value.dtype)
        if self.config.sequence_parallel:  # as megatron's DotProductAttention seeds its dropout
            probs = self.dropout(probs)
        else:
            with tensor_parallel.get_cuda_rng_tracker().fork():
                probs = self.dropout(probs)
        context = torch.matmul(probs, v)  # [b, heads, s/cp, d]
        return context.permute(2, 0, 1, 3).reshape(context.shape[2], context.shape[0], -1)
