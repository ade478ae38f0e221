"""Rollout with Hugging Face `generate`: the CPU and small-run engine, behind the same interface as vLLM.

It keeps its own copy of the policy (loaded like the trainer's, at the pinned revision) and receives the
trainer's weights through `load_weights` after each update.

Log-probs: of each sampled token under `log_softmax(raw logits / temperature)` (raw logits at temperature 1
when greedy). That is what the trainer recomputes as old log-probs, and what verl's vLLM rollout returns
(`logprobs_mode: processed_logprobs`, temperature applied) when top-k/top-p leave the distribution whole; with
top-k/top-p truncation it is the untruncated distribution, like the trainer's. They are recorded by a logits
processor that sees each step's raw logits (it runs before the temperature and top-k/top-p warpers) and keeps
one step of them, instead of `output_logits`, which would hold [batch, steps, vocab] until generation ends.

Sampling: the model's own `generation_config` from the Hub (Qwen's ships repetition_penalty, top_k, top_p) is
replaced by a neutral one, so only `SamplingParams` shape the distribution and the trainer's log-probs stay
comparable. A seed makes a call reproducible without touching the caller's RNG (the RNG is forked).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from rlc_runtime.models import load_causal_lm, load_tokenizer
from rlc_runtime.rollout.base import Generation, SamplingParams


class _SampledLogProbs:
    """A logits processor that records log p(token) of each token the previous step sampled."""

    def __init__(self, temperature: float) -> None:
        self.temperature = temperature
        self.previous: torch.Tensor | None = None  # [rows, vocab] log-probs of the last step
        self.picked: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        self.collect(input_ids)
        self.previous = torch.log_softmax(scores.float() / self.temperature, dim=-1)
        return scores

    def collect(self, input_ids: torch.Tensor) -> None:
        if self.previous is not None:
            self.picked.append(self.previous.gather(-1, input_ids[:, -1:]).squeeze(-1))
            self.previous = None


class HFRollout:
    def __init__(self, model_cfg: Any, device: str, dtype: torch.dtype = torch.float32,
                 tokenizer: Any = None) -> None:
        from transformers import GenerationConfig

        self.device = device
        self.tokenizer = tokenizer or load_tokenizer(model_cfg)
        self.model = load_causal_lm(model_cfg, dtype, device).eval()
        eos = self.model.generation_config.eos_token_id
        ids = eos if isinstance(eos, list) else [eos]
        self.eos_ids = sorted({i for i in [*ids, self.tokenizer.eos_token_id] if i is not None})
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.eos_ids[0]
        self.model.generation_config = GenerationConfig(
            eos_token_id=self.eos_ids, pad_token_id=self.pad_id, bos_token_id=self.tokenizer.bos_token_id)

    @torch.inference_mode()
    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[Generation]:
        ids, mask = self._left_pad(prompts)
        greedy = params.temperature == 0
        recorder = _SampledLogProbs(1.0 if greedy else params.temperature)
        sampling = {} if greedy else {"temperature": params.temperature, "top_p": params.top_p,
                                      "top_k": params.top_k if params.top_k > 0 else 0}
        devices = [torch.cuda.current_device()] if self.device == "cuda" else []
        with torch.random.fork_rng(devices=devices, enabled=params.seed is not None):
            if params.seed is not None:
                torch.manual_seed(params.seed)
            out = self.model.generate(
                input_ids=ids.to(self.device), attention_mask=mask.to(self.device), do_sample=not greedy,
                max_new_tokens=params.max_tokens, num_return_sequences=params.n, use_cache=True,
                logits_processor=[recorder], stop_strings=list(params.stop) or None,
                tokenizer=self.tokenizer if params.stop else None, **sampling)
        recorder.collect(out)
        sampled = out[:, ids.shape[1]:].cpu()
        log_probs = torch.stack(recorder.picked, dim=1).cpu() if recorder.picked else torch.zeros(len(out), 0)
        return [self._generation(row // params.n, sampled[row], log_probs[row], params.stop)
                for row in range(len(sampled))]

    def _left_pad(self, prompts: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, prompt in enumerate(prompts):
            ids[i, width - len(prompt):] = torch.tensor(prompt, dtype=torch.long)
            mask[i, width - len(prompt):] = 1
        return ids, mask

    def _generation(self, prompt_index: int, tokens: torch.Tensor, log_probs: torch.Tensor,
                    stop: tuple[str, ...]) -> Generation:
        """Cut a row where it finished: at its first EOS (kept), or after the token that completed a stop string
        (what follows in the row is generate's padding for finished rows)."""
        ids = tokens.tolist()
        end = next((i + 1 for i, t in enumerate(ids) if t in self.eos_ids), None)
        if end is None and stop:
            end = self._stop_end(ids, stop)
        ids = ids[:end] if end else ids
        return Generation(prompt_index, ids, log_probs[: len(ids)].tolist(), "stop" if end else "length")

    def _stop_end(self, ids: list[int], stop: tuple[str, ...]) -> int | None:
        """The shortest prefix whose text contains a stop string (a binary search: containment only grows)."""
        def contains(n: int) -> bool:
            text = self.tokenizer.decode(ids[:n])
            return any(s in text for s in stop)

        if not contains(len(ids)):
            return None
        low, high = 1, len(ids)
        while low < high:
            middle = (low + high) // 2
            low, high = (low, middle) if contains(middle) else (middle + 1, high)
        return low

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Copy each named tensor into the model in place, one at a time (the trainer gathers them one at a
        time too). Every name must be one of the model's; names not given keep their values, so a tied output
        embedding follows its input embedding."""
        state = self.model.state_dict()
        with torch.no_grad():
            for name, tensor in weights:
                if name not in state:
                    raise KeyError(f"rollout model {type(self.model).__name__} has no weight {name!r}")
                if state[name].shape != tensor.shape:
                    raise ValueError(f"{name} has shape {tuple(state[name].shape)}, the trainer sent "
                                     f"{tuple(tensor.shape)}")
                state[name].copy_(tensor)

    def sleep(self, drop_weights: bool = False) -> None:
        """Nothing to page out: the model is small enough to stay (the vLLM engine frees its KV cache here)."""
        if self.device == "cuda":
            torch.cuda.empty_cache()

    def wake_up(self) -> None:
        pass
