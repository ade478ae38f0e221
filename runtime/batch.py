"""The batch that flows from rollout through rewards, log-probs and updates, in verl's layout.

Prompts are left-padded to a common length P and responses right-padded to R, so `input_ids = [prompt | response]`
and every response token sits at the same column in every row. Per-token quantities (log-probs, values,
advantages) are [B, R] aligned with `responses`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import torch


@dataclass
class TokenBatch:
    input_ids: torch.Tensor  # [B, P + R] long
    attention_mask: torch.Tensor  # [B, P + R] long, 0 on padding
    position_ids: torch.Tensor  # [B, P + R] long
    responses: torch.Tensor  # [B, R] long
    response_mask: torch.Tensor  # [B, R] float/long, 1 on real response tokens (up to and including EOS)
    # Per-token tensors filled in as the step proceeds, each [B, R]:
    old_log_probs: torch.Tensor | None = None
    ref_log_probs: torch.Tensor | None = None
    rollout_log_probs: torch.Tensor | None = None
    values: torch.Tensor | None = None
    advantages: torch.Tensor | None = None
    returns: torch.Tensor | None = None
    token_level_rewards: torch.Tensor | None = None
    rollout_is_weights: torch.Tensor | None = None  # rollout correction: trainer/rollout importance weights
    sum_pi_squared: torch.Tensor | None = None  # sum_v pi_v^2 under the old policy (optimal token baseline)
    # Per-sample metadata (not tensors), length B:
    meta: dict[str, list[Any]] = field(default_factory=dict)

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    @property
    def prompt_length(self) -> int:
        return self.input_ids.shape[1] - self.responses.shape[1]

    def select(self, index: torch.Tensor | slice | list[int]) -> TokenBatch:
        """Rows by index: the tensors and the metadata lists alike."""
        rows = torch.arange(len(self))[index].tolist() if not isinstance(index, list) else index
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, torch.Tensor):
                out[f.name] = value[rows]
            elif f.name == "meta":
                out[f.name] = {k: [v[i] for i in rows] for k, v in value.items()}
            else:
                out[f.name] = value
        return TokenBatch(**out)

    def chunk(self, parts: int) -> list[TokenBatch]:
        """`parts` equal contiguous slices, e.g. one per data-parallel rank (validation makes the batch divide)."""
        size, rest = divmod(len(self), parts)
        if rest:  # a slice per rank that silently left rows out would train on less than the step generated
            raise ValueError(f"a batch of {len(self)} samples does not split into {parts} equal parts")
        return [self.select(slice(i * size, (i + 1) * size)) for i in range(parts)]

    @staticmethod
    def concat(batches: list[TokenBatch]) -> TokenBatch:
        out: dict[str, Any] = {}
        for f in fields(TokenBatch):
            values = [getattr(b, f.name) for b in batches]
            if f.name == "meta":
                out[f.name] = {k: [x for b in batches for x in b.meta[k]] for k in batches[0].meta}
            elif all(isinstance(v, torch.Tensor) for v in values):
                out[f.name] = torch.cat(values)
            else:
                out[f.name] = None
        return TokenBatch(**out)


def pad_to(batch: TokenBatch, prompt_length: int, response_length: int, pad_id: int) -> TokenBatch:
    """The same samples in a wider layout: prompts left-padded to `prompt_length`, responses (and every per-token
    tensor) right-padded to `response_length`, so batches generated apart can be concatenated."""
    grow_p, grow_r = prompt_length - batch.prompt_length, response_length - batch.responses.shape[1]
    if grow_p < 0 or grow_r < 0:
        raise ValueError("pad_to only widens a batch")

    def widen(t: torch.Tensor, value: float) -> torch.Tensor:
        return torch.nn.functional.pad(t, (grow_p, grow_r), value=value)

    attention = widen(batch.attention_mask, 0)
    out = {f.name: getattr(batch, f.name) for f in fields(batch)}
    out |= {"input_ids": widen(batch.input_ids, pad_id), "attention_mask": attention,
            "position_ids": (attention.cumsum(-1) - 1).clamp(min=0)}
    for name in ("responses", "response_mask", "old_log_probs", "ref_log_probs", "rollout_log_probs", "values",
                 "advantages", "returns", "token_level_rewards", "rollout_is_weights", "sum_pi_squared"):
        value = out[name]
        if value is not None:
            out[name] = torch.nn.functional.pad(value, (0, grow_r), value=pad_id if name == "responses" else 0)
    return TokenBatch(**out)
