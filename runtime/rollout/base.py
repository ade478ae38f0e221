"""One interface for rollout engines: HF `generate` (CPU and small runs) and vLLM."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import torch


@dataclass(frozen=True)
class SamplingParams:
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    max_tokens: int = 512
    stop: tuple[str, ...] = ()
    seed: int | None = None


@dataclass
class Generation:
    """One sampled response: token ids (ending at EOS when it stopped there) and their log-probs.

    A multi-turn response also holds the tool and user turns between the model's: `response_mask` is 1 on the
    model's tokens and 0 on those (their log-probs are 0), and `trajectory` records the conversation."""

    prompt_index: int
    token_ids: list[int]
    log_probs: list[float]
    finish_reason: str  # "stop" | "length"
    response_mask: list[int] | None = None  # None: every token is the model's
    trajectory: dict[str, Any] | None = None


class RolloutEngine(Protocol):
    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[Generation]:
        """`n` generations for each prompt, grouped by prompt in order (prompt 0's n samples first)."""

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Replace the engine's weights in place with the trainer's (Hugging Face names)."""

    def sleep(self, drop_weights: bool = False) -> None:
        """Free accelerator memory between rollouts (no-op where not applicable). `drop_weights`: the full weights
        are loaded again before the next generation, so the engine need not keep them."""

    def wake_up(self) -> None: ...
