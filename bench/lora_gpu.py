"""LoRA against full fine-tuning on one GPU: peak memory and seconds per update step of rlc's FSDP2 engine.

The engine (`rlc_runtime.engines.fsdp.FSDPEngine`, FSDP2 over a one-rank NCCL group: fp32 parameters, bf16
compute, gradient checkpointing) trains a randomly initialised model of a Qwen2.5 shape; one step is a mini-batch
of `--rows` sequences (`--prompt` + `--response` tokens) in micro-batches of `--micro`, a policy-gradient loss on
the response tokens, then AdamW. Only torch, transformers and peft are needed (the config is a plain namespace
holding the keys the engine reads), so it runs on a bare GPU image:

    python bench/lora_gpu.py [--shape 1.5b] [--rank 64] [--steps 5]

Prints one JSON line per mode: peak allocated GiB (torch's allocator, over the timed steps) and s/step.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace as NS

import torch
import torch.distributed as dist

SHAPES = {  # Qwen2.5's published configs
    "0.5b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                 num_key_value_heads=2),
    "1.5b": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                 num_key_value_heads=2),
}


def build_model(directory: Path, shape: str) -> None:
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model("qwen2", vocab_size=151936, tie_word_embeddings=True, max_position_embeddings=4096,
                                  **SHAPES[shape])
    AutoModelForCausalLM.from_config(config, dtype=torch.float32).save_pretrained(directory)


def engine_config(path: Path, rank: int) -> NS:
    """The keys FSDPEngine reads, with rlc's defaults."""
    fsdp = NS(param_offload=False, offload_policy=False, optimizer_offload=False, reshard_after_forward=True,
              mixed_precision=None)
    optim = NS(lr=1e-5, betas=[0.9, 0.999], weight_decay=0.01, override_optimizer_config=None)
    model = NS(path=str(path), revision=None, hf_config_path=None, trust_remote_code=False, override_config={},
               use_remove_padding=True, enable_gradient_checkpointing=True, lora_rank=rank, lora_alpha=2 * rank,
               target_modules="all-linear", exclude_modules=None, lora_adapter_path=None)
    section = NS(fsdp_config=fsdp, optim=optim)
    return NS(actor_rollout_ref=NS(model=model, actor=section, ref=section, rollout=NS(temperature=1.0)),
              critic=NS(model=model, fsdp=fsdp, optim=optim))


def batch(rows: int, prompt: int, response: int, vocab: int, seed: int) -> object:
    from rlc_runtime.batch import TokenBatch

    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(10, vocab, (rows, prompt + response), generator=gen)
    attention = torch.ones_like(ids)
    out = TokenBatch(ids, attention, attention.cumsum(-1) - 1, ids[:, prompt:].clone(),
                     torch.ones(rows, response))
    out.advantages = torch.randn(rows, 1, generator=gen).expand(rows, response).contiguous()
    return out


def pg_loss(part: object, outputs: object) -> tuple[torch.Tensor, dict]:
    log_probs = outputs.log_probs()
    mask = part.response_mask.to(log_probs.device)
    loss = -(part.advantages.to(log_probs.device) * log_probs * mask).sum() / mask.sum()
    return loss, {"loss": loss.detach()}


def measure(path: Path, rank: int, args: argparse.Namespace) -> dict[str, object]:
    from rlc_runtime.engines.base import micro_batches
    from rlc_runtime.engines.fsdp import FSDPEngine

    engine = FSDPEngine(engine_config(path, rank), "actor", "cuda")
    trained = sum(p.numel() for p in engine.model.parameters() if p.requires_grad)
    times = []
    for step in range(args.warmup + args.steps):
        if step == args.warmup:
            torch.cuda.reset_peak_memory_stats()
        torch.cuda.synchronize()
        start = time.perf_counter()
        parts = micro_batches(batch(args.rows, args.prompt, args.response, 151936, step), args.micro)
        engine.forward_backward(parts, pg_loss, backward=True)
        engine.optimizer_step(1e-5, 1.0)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    timed = times[args.warmup:]
    result = {"mode": f"lora rank {rank}" if rank else "full", "trained_params": trained,
              "peak_allocated_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2),
              "s_per_step": round(sum(timed) / len(timed), 3), "s_per_step_min": round(min(timed), 3)}
    del engine
    torch.cuda.empty_cache()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="1.5b", choices=sorted(SHAPES))
    parser.add_argument("--rank", type=int, default=64)
    parser.add_argument("--rows", type=int, default=32)
    parser.add_argument("--micro", type=int, default=8)
    parser.add_argument("--prompt", type=int, default=512)
    parser.add_argument("--response", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args()
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29533")
    dist.init_process_group("nccl", rank=0, world_size=1)
    torch.cuda.set_device(0)
    with tempfile.TemporaryDirectory() as tmp:
        build_model(Path(tmp), args.shape)
        for rank in (0, args.rank):
            print(json.dumps({"shape": args.shape, "rows": args.rows, "micro": args.micro,
                              "tokens": args.prompt + args.response, **measure(Path(tmp), rank, args)}), flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
