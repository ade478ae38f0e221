"""Ulysses sequence parallelism for the FSDP2 engine (`ulysses_sequence_parallel_size`, DeepSpeed-Ulysses).

The world's W ranks form W / sp data-parallel replicas of sp consecutive ranks each. The ranks of one group are
given the same rows (the trainer sends each group one data-parallel chunk, verl's dispatch), and each runs the
model on its 1/sp of the (right-padded) sequence with the global position ids, so activations shrink by sp. Only
attention needs the whole sequence: an all-to-all over the group turns sequence-sharded q/k/v [b, heads, s/sp, d]
into head-sharded [b, heads/sp, s, d], attention runs over the full sequence for those heads, and the inverse
all-to-all brings the output back to sequence shards. FSDP still shards the parameters over the whole world
(verl's layout).

The attention is registered with transformers' `AttentionInterface` under `ATTENTION`; the full padding mask and
the group travel as forward kwargs, which transformers hands to every attention call (and which gradient
checkpointing keeps for its recompute). The model builds no mask for this name; attention here builds
causal + key padding (+ the layer's sliding window) from the full mask and runs torch's sdpa, so under Ulysses the
sequence is always padded (no packing) and a flash-attention setting is not used; soft-capped attention logits
(Gemma 2) are refused. Key/value heads that do not divide by sp are repeated to
the query heads first (GQA), as verl does; query heads must divide by sp (validation refuses otherwise).

Per-token outputs (log-probs, entropy, values) are computed on each rank's slice and gathered along the sequence.
The gather's backward keeps this rank's slice of the gradient times sp: every rank of the group computes the same
loss from the same gathered tensors, the all-to-alls route each slice's gradient back to where it came from, and
FSDP averages over all W ranks where the update's loss scaling assumes W / sp replicas.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F

from rlc_runtime.algorithms.losses import entropy_from_logits, log_probs_from_logits, sum_pi_squared_from_logits
from rlc_runtime.engines.packing import accepts_logits_to_keep

ATTENTION = "rlc_ulysses"


class _AllToAll(torch.autograd.Function):
    """all_to_all_single over dim 0 (one chunk per rank); it is its own adjoint."""

    @staticmethod
    def forward(ctx: Any, chunks: torch.Tensor, group: dist.ProcessGroup) -> torch.Tensor:
        ctx.group = group
        return _all_to_all(chunks, group)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return _all_to_all(grad, ctx.group), None


def _all_to_all(chunks: torch.Tensor, group: dist.ProcessGroup) -> torch.Tensor:
    chunks = chunks.contiguous()  # the collective reads and writes flat memory: no strided views
    out = torch.empty_like(chunks)
    dist.all_to_all_single(out, chunks, group=group)
    return out


def seq_to_heads(x: torch.Tensor, group: dist.ProcessGroup) -> torch.Tensor:
    """[b, H, s/sp, d] sequence-sharded -> [b, H/sp, s, d] head-sharded (sequence chunks in rank order)."""
    sp = dist.get_world_size(group)
    b, heads, local, d = x.shape
    chunks = x.reshape(b, sp, heads // sp, local, d).transpose(0, 1)  # [sp (head chunk), b, H/sp, s/sp, d]
    got = _AllToAll.apply(chunks, group)  # [sp (sequence chunk), b, H/sp, s/sp, d]
    return got.permute(1, 2, 0, 3, 4).reshape(b, heads // sp, sp * local, d)


def heads_to_seq(x: torch.Tensor, group: dist.ProcessGroup) -> torch.Tensor:
    """[b, H/sp, s, d] head-sharded -> [b, H, s/sp, d] sequence-sharded: the inverse of `seq_to_heads`."""
    sp = dist.get_world_size(group)
    b, heads, length, d = x.shape
    chunks = x.reshape(b, heads, sp, length // sp, d).permute(2, 0, 1, 3, 4)  # [sp (sequence chunk), b, h, s/sp, d]
    got = _AllToAll.apply(chunks, group)  # [sp (head chunk), b, h, s/sp, d]
    return got.transpose(0, 1).reshape(b, sp * heads, length // sp, d)


def attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
              attention_mask: Any, scaling: float | None = None, dropout: float = 0.0,
              sliding_window: int | None = None, ulysses_group: dist.ProcessGroup | None = None,
              ulysses_mask: torch.Tensor | None = None, **_: Any) -> tuple[torch.Tensor, None]:
    """transformers' attention signature: q [b, H, s/sp, d], k/v [b, KV, s/sp, d] -> [b, s/sp, H, d]."""
    if ulysses_group is None or ulysses_mask is None:
        raise RuntimeError(f"attention {ATTENTION!r} runs only inside the FSDP engine's Ulysses forward")
    sp = dist.get_world_size(ulysses_group)
    if key.shape[1] % sp:  # fewer (or indivisible) KV heads than ranks: give every query head its own copy
        repeat = query.shape[1] // key.shape[1]
        key, value = key.repeat_interleave(repeat, dim=1), value.repeat_interleave(repeat, dim=1)
    q, k, v = (seq_to_heads(t, ulysses_group) for t in (query, key, value))
    length = q.shape[2]
    causal = torch.ones(length, length, dtype=torch.bool, device=q.device).tril()
    if sliding_window:  # transformers' window: key index > query index - window
        causal = causal.triu(1 - sliding_window)
    allowed = causal & ulysses_mask.bool()[:, None, None, :]
    # a query with no real key before it (left padding) attends to itself, so its (unused) output is not NaN
    allowed = allowed | torch.eye(length, dtype=torch.bool, device=q.device)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, scale=scaling,
                                         dropout_p=dropout if module.training else 0.0,
                                         enable_gqa=k.shape[1] != q.shape[1])
    return heads_to_seq(out, ulysses_group).transpose(1, 2).contiguous(), None


def use_ulysses_attention(model: torch.nn.Module) -> None:
    """Register the attention with transformers and switch `model` (and its sub-models) to it."""
    from transformers import AttentionInterface

    AttentionInterface.register(ATTENTION, attention)
    hf = model if hasattr(model, "set_attn_implementation") else model.model  # a critic's ValueModel wraps one
    hf.set_attn_implementation(ATTENTION)


def check_model(model: torch.nn.Module, sp: int) -> None:
    """What this attention cannot run: heads that do not split over sp, soft-capped attention logits."""
    config = getattr(model, "config", None) or model.model.config
    heads = getattr(config, "num_attention_heads", None)
    if heads is None or heads % sp:
        raise ValueError(f"ulysses_sequence_parallel_size {sp} must divide the model's {heads} attention heads")
    if getattr(config, "attn_logit_softcapping", None):
        raise ValueError(f"{config.model_type}'s soft-capped attention is not implemented under Ulysses in rlc: set "
                         "ulysses_sequence_parallel_size to 1")


class _GatherSeq(torch.autograd.Function):
    """All-gather along dim 1 over the group; backward keeps this rank's slice, times the group size."""

    @staticmethod
    def forward(ctx: Any, local: torch.Tensor, group: dist.ProcessGroup) -> torch.Tensor:
        ctx.group, ctx.size, ctx.rank = group, dist.get_world_size(group), dist.get_rank(group)
        local = local.contiguous()
        parts = [torch.empty_like(local) for _ in range(ctx.size)]
        dist.all_gather(parts, local, group=group)
        return torch.cat(parts, dim=1)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad.chunk(ctx.size, dim=1)[ctx.rank] * ctx.size, None


def gather_sequence(local: torch.Tensor, group: dist.ProcessGroup) -> torch.Tensor:
    """[b, s/sp, ...] per rank -> [b, s, ...] on every rank of the group."""
    return _GatherSeq.apply(local, group)


def pad_to_multiple(tensor: torch.Tensor, multiple: int) -> torch.Tensor:
    """Right-pad dim 1 with zeros to a multiple of `multiple` (a zero attention mask: padding)."""
    return F.pad(tensor, (0, -tensor.shape[1] % multiple))


def local_slice(tensor: torch.Tensor, rank: int, sp: int) -> torch.Tensor:
    length = tensor.shape[1] // sp
    return tensor[:, rank * length:(rank + 1) * length]


def local_forward(model: torch.nn.Module, batch: Any, device: str,
                  group: dist.ProcessGroup) -> tuple[torch.Tensor, torch.Tensor]:
    """This rank's float32 logits (values for a critic) of the batch's right-padded sequences at the positions of
    its shard from the first one that predicts a response token on, [b, keep, V], and the [b, keep] tokens they
    predict (the next one; 0 past the end). The head runs on those positions only: the vocabulary is where the
    memory goes."""
    sp, rank = dist.get_world_size(group), dist.get_rank(group)
    ids, mask, positions = (pad_to_multiple(t, sp) for t in (batch.input_ids, batch.attention_mask,
                                                             batch.position_ids))
    labels = F.pad(ids[:, 1:], (0, 1))
    shard = ids.shape[1] // sp
    keep = max(0, min(shard, (rank + 1) * shard - (batch.prompt_length - 1)))  # a suffix of the shard
    kwargs = {"logits_to_keep": torch.arange(shard - keep, shard, device=device)} \
        if accepts_logits_to_keep(model) else {}
    out = model(input_ids=local_slice(ids, rank, sp).to(device),
                position_ids=local_slice(positions, rank, sp).to(device), use_cache=False,
                ulysses_group=group, ulysses_mask=mask.to(device), **kwargs)
    logits = out.logits[:, out.logits.shape[1] - keep:]  # a value head scores every position anyway
    return logits.float(), local_slice(labels, rank, sp)[:, shard - keep:].to(device)


def response_columns(full: torch.Tensor, batch: Any) -> torch.Tensor:
    """The [b, R] columns of a gathered [b, s] per-position tensor that predict the response tokens."""
    start = batch.prompt_length - 1
    return full[:, start:start + batch.responses.shape[1]]


class ShardedOutputs:
    """`engines.base.ModelOutputs` of one micro-batch under Ulysses: computed per sequence shard, gathered."""

    def __init__(self, model: torch.nn.Module, part: Any, device: str, group: dist.ProcessGroup,
                 temperature: float) -> None:
        self.model, self.part, self.device, self.group, self.temperature = model, part, device, group, temperature
        self._local: tuple[torch.Tensor, torch.Tensor] | None = None

    def _logits(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._local is None:
            logits, labels = local_forward(self.model, self.part, self.device, self.group)
            self._local = logits / self.temperature, labels
        return self._local

    def _gathered(self, kept: torch.Tensor) -> torch.Tensor:
        """[b, keep] of this shard -> the [b, R] response columns of the whole sequence."""
        shard = -(-self.part.input_ids.shape[1] // dist.get_world_size(self.group))
        local = F.pad(kept, (shard - kept.shape[1], 0))  # zeros before the response: every shard the same width
        return response_columns(gather_sequence(local, self.group), self.part)

    def log_probs(self) -> torch.Tensor:
        return self._gathered(log_probs_from_logits(*self._logits()))

    def entropy(self, grad: bool) -> torch.Tensor:
        with torch.set_grad_enabled(grad and torch.is_grad_enabled()):
            return self._gathered(entropy_from_logits(self._logits()[0]))

    def sum_pi_squared(self) -> torch.Tensor:
        return self._gathered(sum_pi_squared_from_logits(self._logits()[0].detach()))

    def values(self) -> torch.Tensor:
        logits, _ = local_forward(self.model, self.part, self.device, self.group)
        return self._gathered(logits[..., 0])

