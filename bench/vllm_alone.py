"""vLLM generating alone at bench/grpo_gpu.py's batch: the ceiling for rlc's generation phase.

Same model directory, prompts (the tokenizer's chat template, as token ids), samples per prompt, new tokens and
sampling as the rlc run, and vLLM built as runtime/rollout/vllm.py builds it for that run (in-process engine core,
bf16, 0.4 of the GPU, sleep mode on, prefix caching, the sampled tokens' log-probs returned). No training, no
weight sync, no sleep. From the repo root on the GPU host (PYTHONPATH and VLLM_USE_FLASHINFER_SAMPLER=0 as in
../shared/ENVIRONMENT.md):

    python bench/vllm_alone.py --shape 0.5b --steps 6 [--out DIR]

Each step generates for the next batch of prompts; prints `RESULT {json}` with the seconds of each generation,
their mean after the first, and generated tokens per second over those.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import grpo_gpu  # noqa: E402 - the benchmark's model and prompts, shared

SAMPLES = 8  # rollout.n in bench/grpo_gpu.py
MAX_PROMPT = 256  # data.max_prompt_length there


def main() -> None:
    parser = argparse.ArgumentParser()
    grpo_gpu.shape_arguments(parser)
    args = parser.parse_args()
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # as rlc runs it
    from transformers import AutoTokenizer
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    _, prompts, new_tokens = grpo_gpu.SHAPES[args.shape]
    model_dir = grpo_gpu.build(args.out, args.shape)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    texts = [tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                           add_generation_prompt=True)
             for text in grpo_gpu.prompt_texts(prompts * args.steps)]
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]  # as runtime/data.py tokenizes prompts
    max_len = MAX_PROMPT + new_tokens
    llm = LLM(model=str(model_dir), skip_tokenizer_init=True, dtype="bfloat16", gpu_memory_utilization=0.4,
              max_model_len=max_len, max_num_batched_tokens=max(8192, max_len), max_num_seqs=256,
              enable_prefix_caching=True, enable_sleep_mode=True, seed=42, logprobs_mode="processed_logprobs")
    times, tokens = [], []
    for step in range(args.steps):
        sampling = SamplingParams(n=SAMPLES, temperature=1.0, max_tokens=new_tokens, logprobs=0, seed=42 + step,
                                  stop_token_ids=[tokenizer.eos_token_id], detokenize=False)
        batch = [TokensPrompt(prompt_token_ids=p) for p in ids[step * prompts:(step + 1) * prompts]]
        start = time.perf_counter()
        outputs = llm.generate(batch, sampling, use_tqdm=False)
        times.append(time.perf_counter() - start)
        tokens.append(sum(len(s.token_ids) for o in outputs for s in o.outputs))
        print(f"generation {step + 1}: {tokens[-1]} tokens in {times[-1]:.3f}s", flush=True)
    later = slice(1, None) if len(times) > 1 else slice(None)
    print("RESULT " + json.dumps({
        "shape": args.shape, "s_per_gen": times, "mean_after_first": sum(times[later]) / len(times[later]),
        "tokens_per_s": sum(tokens[later]) / sum(times[later]), "prompt_tokens": len(ids[0]),
        "mean_response_length": sum(tokens) / len(tokens) / (prompts * SAMPLES)}), flush=True)


if __name__ == "__main__":
    main()
