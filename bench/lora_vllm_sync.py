"""How a LoRA policy reaches vLLM: merged weights (rlc's way) against vLLM's own LoRA (an adapter per sync).

Per simulated step, each way syncs the trained adapter and generates `--prompts` x `--n` samples of `--tokens`:
- merged: fold the adapters into the base (`rlc_runtime.engines.lora.merged_weights`) and reload every weight
  into the running engine through rlc's worker extension, as the trainer does;
- lora: write the adapter in PEFT's format and generate with a new `LoRARequest` (vLLM loads it on first use),
  the engine started with `enable_lora`.
The model is a peft-wrapped copy of a local checkpoint with random non-zero adapters (all-linear, `--rank`).
Each way runs in its own process (one vLLM engine per process); prints one JSON line per way:

    python bench/lora_vllm_sync.py MODEL_DIR [--device cpu] [--rank 16] [--steps 5]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def adapted_model(model_dir: str, rank: int) -> object:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32),
                           LoraConfig(r=rank, lora_alpha=2 * rank, target_modules="all-linear"))
    torch.manual_seed(0)
    for name, param in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.02)
    return model


def run(way: str, args: argparse.Namespace) -> dict[str, object]:
    import torch
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    from rlc_runtime.engines import lora

    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    if args.device == "cpu":
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB, as rlc's CPU rollout asks
    model = adapted_model(args.model, args.rank)
    options = dict(model=args.model, dtype="float32" if args.device == "cpu" else "bfloat16",
                   enforce_eager=args.device == "cpu", max_model_len=256, gpu_memory_utilization=args.memory, seed=0,
                   skip_tokenizer_init=True,
                   worker_extension_cls="rlc_runtime.rollout.vllm_worker.WeightSyncExtension")
    if way == "lora":
        options |= dict(enable_lora=True, max_lora_rank=args.rank, max_loras=1)
    started = time.perf_counter()
    llm = LLM(**options)
    startup = time.perf_counter() - started
    prompts = [TokensPrompt(prompt_token_ids=[5 + i, 17, 42, 8 + i]) for i in range(args.prompts)]
    params = SamplingParams(n=args.n, max_tokens=args.tokens, min_tokens=args.tokens, temperature=1.0, seed=0)
    syncs, gens = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for step in range(args.steps):
            with torch.no_grad():
                for name, param in model.named_parameters():  # a "training step" moves the adapters
                    if "lora_" in name:
                        param.add_(0.001)
            start = time.perf_counter()
            request = None
            if way == "merged":
                weights = lora.merged_weights(((n, t.detach()) for n, t in model.state_dict().items()),
                                              lora.scalings(model))
                bucket = [(n, t) for n, t in weights if n != "lm_head.weight"]
                llm.collective_rpc("rlc_load_weights", args=(bucket,))
                llm.reset_prefix_cache()
            else:
                from vllm.lora.request import LoRARequest

                folder = Path(tmp) / f"step{step}"
                lora.save_adapter(model, lora.adapter_tensors(model.state_dict().items()), folder)
                request = LoRARequest(f"step{step}", step + 1, str(folder))
            syncs.append(time.perf_counter() - start)
            start = time.perf_counter()
            llm.generate(prompts, params, use_tqdm=False, lora_request=request)
            gens.append(time.perf_counter() - start)
    return {"way": way, "device": args.device, "rank": args.rank, "startup_s": round(startup, 2),
            "sync_s": round(sum(syncs[1:]) / max(1, len(syncs) - 1), 4),
            "generate_s": round(sum(gens[1:]) / max(1, len(gens) - 1), 4),
            "samples": args.prompts * args.n, "tokens": args.tokens}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--memory", type=float, default=0.1, help="gpu_memory_utilization (on CPU: of RAM)")
    parser.add_argument("--way", choices=("merged", "lora"))
    args = parser.parse_args()
    if args.way:
        print("RESULT " + json.dumps(run(args.way, args)), flush=True)
        return
    for way in ("merged", "lora"):
        done = subprocess.run([sys.executable, *sys.argv, "--way", way], capture_output=True, text=True)
        lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
        print(lines[-1][7:] if lines else json.dumps({"way": way, "error": done.stderr[-1500:]}), flush=True)


if __name__ == "__main__":
    main()
