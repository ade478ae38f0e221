"""The training-engine contract: what a backend (FSDP2, Megatron) supplies, and nothing more.

The PPO/GRPO update (mini- and micro-batches, shuffle, loss weighting, learning-rate schedule, clipping, the
non-finite skip, metrics) is written once, in `rlc_runtime.engines.update`, against this contract, as torchtitan
keeps one training loop over many `parallelize_fn`s. A backend only builds and shards its model, runs forwards
(and backwards) over micro-batches with a loss the update hands it, steps its optimizer, and moves weights in and
out. Workers and the controller never ask which backend they hold.

Why `forward_backward` takes the loss as a callback rather than returning log-probs: a pipeline-parallel engine
runs forward and backward of several micro-batches interleaved inside its own schedule, and only its last stage
sees the outputs, so the loss must go to where the outputs are. All tensors cross the contract on CPU in the
`TokenBatch` layout; results come back on CPU on every rank.

Gradient semantics every engine keeps: gradients are averaged over the data-parallel ranks (FSDP's and Megatron
DDP's reduction), and a loss is backpropagated as given (an engine that divides by the number of micro-batches
multiplies it back).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Protocol

import torch

from rlc_runtime.batch import TokenBatch


class ModelOutputs(Protocol):
    """One micro-batch's forward, read lazily: a loss asks only for what it uses. All are [b, R] float32 aligned
    with `responses`, differentiable while training."""

    def log_probs(self) -> torch.Tensor:
        """log p(response token) under `logits / temperature`, the distribution the rollout samples."""

    def entropy(self, grad: bool) -> torch.Tensor:
        """Entropy per position; `grad=False` keeps no graph (reported, not optimised)."""

    def sum_pi_squared(self) -> torch.Tensor:
        """sum_v p_v^2 per position over the whole vocabulary, with no graph (the optimal token baseline)."""

    def values(self) -> torch.Tensor:
        """Value predictions (critic engines)."""


# (micro-batch, its outputs) -> (loss to backpropagate or None, results: tensors or floats, per micro-batch)
MicroFn = Callable[[TokenBatch, ModelOutputs], tuple[torch.Tensor | None, dict[str, Any]]]


class TrainEngine(Protocol):
    role: str  # actor | ref | critic
    device: str
    data_parallel_size: int
    equal_micro_batches: bool  # a pipeline sends activations of one fixed shape: micro-batches must be equal
    sequence_parallel_size: int  # ranks that split each sequence (Ulysses): a token budget per GPU grows by it

    def data_batch(self, batch: TokenBatch) -> tuple[TokenBatch, slice]:
        """The rows this data-parallel replica computes on, from this rank's slice (a model-parallel group
        concatenates its ranks' slices), and where this rank's own rows sit in them."""

    def forward_backward(self, parts: list[TokenBatch], fn: MicroFn, backward: bool) -> list[dict[str, Any]]:
        """`fn` on each micro-batch's outputs, in order; with `backward` its loss is backpropagated (gradients
        accumulate until `optimizer_step`), else no graph is kept. Returns `fn`'s results on every rank, tensors
        on CPU."""

    def resident(self, training: bool) -> AbstractContextManager[None]:
        """A phase: the weights (with `training` also gradients and optimizer state) stay on the device for the
        block. An engine that offloads between phases brings them back for it and returns them after; the others
        give a no-op. Calls inside the block (forward_backward, optimizer_step) move nothing more."""

    def optimizer_step(self, lr: float, max_norm: float) -> float:
        """Set the learning rate, clip gradients to `max_norm` by their global norm, step unless that norm is not
        finite (verl skips such steps rather than poison the weights), zero the gradients; return the norm."""

    def all_reduce_sum(self, values: torch.Tensor) -> torch.Tensor:
        """Sum of a CPU float64 tensor over the data-parallel ranks."""

    def all_reduce_max(self, values: torch.Tensor) -> torch.Tensor:
        """Maximum of a CPU float64 tensor over the data-parallel ranks."""

    def named_weights(self) -> Iterator[tuple[str, torch.Tensor]]:
        """Full (gathered) weights under Hugging Face names, one tensor at a time, for rollout sync and export;
        a collective: every rank must iterate."""

    def save_checkpoint(self, directory: Path, extra: dict[str, Any]) -> None:
        """Model and optimizer state of this rank, plus `extra` (the update's own state); the caller makes the
        directory atomic."""

    def load_checkpoint(self, directory: Path) -> dict[str, Any]:
        """Restore what `save_checkpoint` wrote; returns its `extra`."""

    def save_hf(self, directory: Path) -> None:
        """Consolidated Hugging Face model (config, safetensors, tokenizer), written by rank 0."""


def micro_batches(batch: TokenBatch, size: int | None, equal: bool = False) -> list[TokenBatch]:
    """Consecutive micro-batches of `size` rows (the whole batch when unset); the last may be shorter, unless
    `equal` asks for the largest size up to `size` that divides the batch."""
    size = max(1, min(size or len(batch), len(batch)))
    if equal:
        size = max(d for d in range(1, size + 1) if len(batch) % d == 0)
    return [batch.select(list(range(i, min(i + size, len(batch))))) for i in range(0, len(batch), size)]


def token_budget_groups(lengths: list[int], count: int, budget: int) -> list[list[int]] | None:
    """Row indices in `count` groups of at most `budget` tokens each, balanced (longest row first, into the
    lightest group), each group in the rows' order; None when the rows do not fit in `count` groups that way."""
    groups: list[list[int]] = [[] for _ in range(count)]
    totals = [0] * count
    for row in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        lightest = min(range(count), key=lambda g: totals[g])
        if totals[lightest] + lengths[row] > budget:
            return None
        groups[lightest].append(row)
        totals[lightest] += lengths[row]
    return [sorted(group) for group in groups if group]


def cpu_results(results: dict[str, Any]) -> dict[str, Any]:
    """A micro-batch's results as they cross the contract: tensors detached onto the CPU, numbers as floats."""
    return {k: v.detach().cpu() if isinstance(v, torch.Tensor) and v.dim() else float(v) for k, v in results.items()}
