"""One interface for training engines (FSDP2 now, Megatron next), as seen by a worker on one rank.

A worker owns one engine; the controller never touches engines directly. All tensors in and out are on CPU in the
`TokenBatch` layout; the engine moves them to its device. `micro_batch_size` is per rank.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import torch

from rlc_runtime.batch import TokenBatch


class TrainEngine(Protocol):
    def compute_log_probs(self, batch: TokenBatch, micro_batch_size: int,
                          with_entropy: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """[B, R] log-probs of `batch.responses` under the current weights (and [B, R] entropy if asked)."""

    def compute_values(self, batch: TokenBatch, micro_batch_size: int) -> torch.Tensor:
        """[B, R] value predictions (critic engines only)."""

    def update_policy(self, batch: TokenBatch) -> dict[str, float]:
        """PPO epochs over mini-batches of `batch` (which carries advantages, old and ref log-probs).
        Returns verl-named metrics: actor/pg_loss, actor/kl_loss, actor/entropy, actor/pg_clipfrac,
        actor/ppo_kl, actor/grad_norm, actor/lr."""

    def update_critic(self, batch: TokenBatch) -> dict[str, float]:
        """Value-loss epochs; returns critic/vf_loss, critic/vf_clipfrac, critic/grad_norm, critic/lr."""

    def named_weights(self) -> Iterator[tuple[str, torch.Tensor]]:
        """Full (gathered) weights under Hugging Face names, one tensor at a time, for rollout sync and export."""

    def save_checkpoint(self, directory: Path) -> None:
        """Model, optimizer and scheduler state for this rank (the caller makes the directory atomic)."""

    def load_checkpoint(self, directory: Path) -> None: ...

    def save_hf(self, directory: Path) -> None:
        """Consolidated Hugging Face model (config, safetensors, tokenizer) on rank 0."""
