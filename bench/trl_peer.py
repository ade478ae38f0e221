"""The peer: TRL's GRPOTrainer with vLLM colocated, at bench/grpo_gpu.py's shape, token counts and batch.

Same model directory, prompts (chat template of the same tokenizer), samples per prompt, new tokens, sampling
temperature, bf16, gradient checkpointing, KL (beta 0.001) to a reference, learning rate, one optimizer step per
step over all samples in micro-batches of 16, vLLM at 0.4 of the GPU. Adapted from ../shared/gpu/trl_peer.py,
which measured the numbers in issue 16. Needs trl==1.16.0, datasets and vLLM on the GPU host
(../shared/ENVIRONMENT.md). From the repo root there:

    torchrun --nproc_per_node=1 bench/trl_peer.py --shape 0.5b --steps 6 [--out DIR]

Prints `RESULT {json}`: the seconds of each step, their mean after the first, the peak memory.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import grpo_gpu  # noqa: E402 - the benchmark's model and prompts, shared

SAMPLES = 8  # rollout.n in bench/grpo_gpu.py
MICRO_BATCH = 16  # ppo_micro_batch_size_per_gpu there


def reward(completions: list, **_: object) -> list[float]:
    return [float(random.random() < 0.5) for _ in completions]  # grpo_gpu.py's coin flip


def main() -> None:
    import torch
    from datasets import Dataset
    from transformers import AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    parser = argparse.ArgumentParser()
    grpo_gpu.shape_arguments(parser)
    args = parser.parse_args()
    _, prompts, new_tokens = grpo_gpu.SHAPES[args.shape]
    args.out.mkdir(parents=True, exist_ok=True)
    model_dir = grpo_gpu.build(args.out, args.shape)
    texts = grpo_gpu.prompt_texts(prompts * (args.steps + 2))
    dataset = Dataset.from_list([{"prompt": [{"role": "user", "content": text}]} for text in texts])
    times: list[float] = []

    class StepTimer(TrainerCallback):
        def on_step_begin(self, *_: object, **__: object) -> None:
            torch.cuda.synchronize()
            self.start = time.perf_counter()

        def on_step_end(self, _args: object, state: object, *__: object, **___: object) -> None:
            torch.cuda.synchronize()
            times.append(time.perf_counter() - self.start)
            print(f"step {state.global_step} {times[-1]:.2f}s", flush=True)

    config = GRPOConfig(
        output_dir=str(args.out / f"trl-{args.shape}"), per_device_train_batch_size=MICRO_BATCH,
        gradient_accumulation_steps=prompts * SAMPLES // MICRO_BATCH, num_generations=SAMPLES,
        max_completion_length=new_tokens, bf16=True, gradient_checkpointing=True, beta=0.001, learning_rate=1e-6,
        logging_steps=1, max_steps=args.steps, report_to=[], save_strategy="no", temperature=1.0, use_vllm=True,
        vllm_mode="colocate", vllm_gpu_memory_utilization=0.4, seed=0)
    trainer = GRPOTrainer(model=str(model_dir), reward_funcs=reward, args=config, train_dataset=dataset,
                          processing_class=AutoTokenizer.from_pretrained(model_dir), callbacks=[StepTimer()])
    trainer.train()
    lengths = [h["completions/mean_length"] for h in trainer.state.log_history if "completions/mean_length" in h]
    print("RESULT " + json.dumps({
        "shape": args.shape, "s_per_step": times, "mean_after_first": sum(times[1:]) / max(1, len(times) - 1),
        "completion_mean_length": lengths, "peak_alloc_gib": torch.cuda.max_memory_allocated() / 2**30}), flush=True)


if __name__ == "__main__":
    main()
