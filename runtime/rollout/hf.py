"""Rollout with Hugging Face `generate`: the CPU and small-run engine, behind the same interface as vLLM.

It keeps its own copy of the policy and receives the trainer's weights by `load_weights` after each update.
Log-probs are of the sampled tokens under the sampling distribution at the configured temperature, which is what
the trainer recomputes (`logits / temperature`), so `rollout/logprob_diff` compares like with like.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from rlc_runtime.models import load_causal_lm
from rlc_runtime.rollout.base import Generation, SamplingParams


class HFRollout:
    def __init__(self, cfg: Any, device: str, tokenizer: Any) -> None:
        dtype = torch.bfloat16 if device == "cuda" else torch.float32
        self.model = load_causal_lm(cfg.actor_rollout_ref.model, dtype=dtype).to(device).eval()
        self.device, self.tokenizer = device, tokenizer
        self.pad_id = tokenizer.pad_token_id
        eos = tokenizer.eos_token_id
        self.eos_ids = eos if isinstance(eos, list) else [eos]

    @torch.inference_mode()
    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[Generation]:
        if params.seed is not None:
            torch.manual_seed(params.seed)
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, prompt in enumerate(prompts):
            ids[i, width - len(prompt):] = torch.tensor(prompt)
            mask[i, width - len(prompt):] = 1
        greedy = params.temperature == 0
        out = self.model.generate(
            input_ids=ids.to(self.device), attention_mask=mask.to(self.device), do_sample=not greedy,
            temperature=None if greedy else params.temperature, top_p=None if greedy else params.top_p,
            top_k=None if greedy or params.top_k <= 0 else params.top_k, max_new_tokens=params.max_tokens,
            num_return_sequences=params.n, eos_token_id=self.eos_ids, pad_token_id=self.pad_id,
            output_logits=True, return_dict_in_generate=True, stop_strings=list(params.stop) or None,
            tokenizer=self.tokenizer if params.stop else None,
        )
        sampled = out.sequences[:, width:].cpu()
        logits = torch.stack(out.logits, dim=1).float().cpu()
        log_probs = torch.log_softmax(logits / (params.temperature or 1.0), -1)
        picked = log_probs.gather(-1, sampled[:, : logits.shape[1], None]).squeeze(-1)
        return [self._generation(row // params.n, sampled[row], picked[row]) for row in range(len(sampled))]

    def _generation(self, prompt_index: int, tokens: torch.Tensor, log_probs: torch.Tensor) -> Generation:
        ids = tokens.tolist()
        end = next((i + 1 for i, t in enumerate(ids) if t in self.eos_ids), None)
        ids = ids[:end] if end else ids
        return Generation(prompt_index, ids, log_probs[: len(ids)].tolist(), "stop" if end else "length")

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        state = {name: tensor for name, tensor in weights}
        self.model.load_state_dict(state, strict=False)

    def sleep(self) -> None:
        pass

    def wake_up(self) -> None:
        pass
