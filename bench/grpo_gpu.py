"""GRPO on one GPU at the peer benchmark's shape, timed per phase, for comparison with TRL's GRPOTrainer.

Shapes (../shared/ENVIRONMENT.md): random-initialised models from the tiny tokenizer, prompts of 40 `a+b=` groups
(about 200 tokens), bf16, gradient checkpointing, a KL term against a reference model (kl_loss_coef 0.001), one
optimizer step per training step. `--shape 0.5b`: Qwen2-0.5B, 8 prompts x 8 samples x 256 new tokens;
`--shape 1.5b`: Qwen2.5-1.5B, 32 prompts x 8 samples x 1024 new tokens (generation-heavy).
Nothing is downloaded: the model and tokenizer are built here. Run from the repo root on the GPU host:

    python bench/grpo_gpu.py --rollout vllm --backend fsdp --shape 0.5b --steps 6 [--out DIR] [--set KEY=VALUE ...]
        [--tag NAME]

It launches `rlc launch` (the same path users take) and prints the mean of each `timing_s/*` metric over the
steps after the first, the tokens/s of generation and update, and the peak GPU memory. `run()` is the same from
Python (bench/packing_gpu.py, bench/peers_gpu.py); `build()` and `prompt_texts()` give the peers the same model
directory and prompts.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QWEN2_05B = dict(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                 num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=4096, tie_word_embeddings=True,
                 rope_theta=1000000.0, rms_norm_eps=1e-6)
QWEN25_15B = dict(QWEN2_05B, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12)
# name: (model shape, prompts per step, new tokens); each step is one optimizer step over all its samples
SHAPES = {"0.5b": (QWEN2_05B, 8, 256), "1.5b": (QWEN25_15B, 32, 1024)}
GROUPS = 40  # `a+b=` groups per prompt


def build(out: Path, shape: str = "0.5b", min_groups: int = GROUPS) -> Path:
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    model_dir = out / f"qwen2-{shape}-random"
    if not (model_dir / "config.json").exists():
        tokenizer = AutoTokenizer.from_pretrained(ROOT / "examples" / "models" / "tiny-qwen2")
        torch.manual_seed(0)
        config = Qwen2Config(**SHAPES[shape][0], eos_token_id=tokenizer.eos_token_id,
                             pad_token_id=tokenizer.pad_token_id)
        Qwen2ForCausalLM(config).to(torch.bfloat16).save_pretrained(model_dir)
        tokenizer.save_pretrained(model_dir)
    rows = [{"data_source": "bench", "prompt": [{"role": "user", "content": text}],
             "reward_model": {"style": "rule", "ground_truth": "0"}} for text in prompt_texts(512, min_groups)]
    import pandas as pd

    pd.DataFrame(rows).to_parquet(out / "prompts.parquet", index=False)
    # A random model's tokens lie mostly outside the tiny tokenizer, so texts carry no signal: a coin flip per
    # sample gives GRPO non-zero advantages, so the update does the work it does in a real run.
    (out / "reward.py").write_text("import random\n\ndef compute_score(data_source, solution_str, ground_truth, "
                                   "extra_info=None):\n    return float(random.random() < 0.5)\n")
    return model_dir


def prompt_texts(count: int, min_groups: int = GROUPS) -> list[str]:
    """The user messages of the first `count` prompts, in the order rlc's sampler starts from (no shuffle): 40
    `a+b=` groups each (202 tokens with the chat template), or with `min_groups` a length drawn from
    [min_groups, 40] groups, which leaves padding for packing to save."""
    rng = random.Random(0)
    sizes = [GROUPS if min_groups >= GROUPS else rng.randint(min_groups, GROUPS) for _ in range(count)]
    return [" ".join(f"{rng.randint(0, 9)}+{rng.randint(0, 9)}=" for _ in range(size)) for size in sizes]


def config(out: Path, model_dir: Path, rollout: str, backend: str, steps: int, shape: str = "0.5b") -> Path:
    _, prompts, new_tokens = SHAPES[shape]
    text = f"""
backend: {backend}
algorithm: {{adv_estimator: grpo}}
data:
  train_files: {out / 'prompts.parquet'}
  train_batch_size: {prompts}
  shuffle: false
  max_prompt_length: 256
  max_response_length: {new_tokens}
actor_rollout_ref:
  model: {{path: {model_dir}, enable_gradient_checkpointing: true}}
  actor:
    optim: {{lr: 1.0e-6}}
    ppo_mini_batch_size: {prompts}
    ppo_micro_batch_size_per_gpu: 16
    use_kl_loss: true
    kl_loss_coef: 0.001
  rollout:
    name: {rollout}
    n: 8
    temperature: 1.0
    tensor_model_parallel_size: 1
    gpu_memory_utilization: 0.4
    log_prob_micro_batch_size_per_gpu: 32
    load_format: auto
    ignore_eos: false
  ref: {{log_prob_micro_batch_size_per_gpu: 32}}
custom_reward_function: {{path: {out / 'reward.py'}}}
trainer:
  device: cuda
  n_gpus_per_node: 1
  total_training_steps: {steps}
  save_freq: -1
  test_freq: -1
  val_before_train: false
  logger: [console, jsonl]
  project_name: bench
  experiment_name: grpo_{rollout}_{backend}_{shape}
"""
    path = out / f"grpo_{rollout}_{backend}_{shape}.yaml"
    path.write_text(text)
    return path


def summarise(metrics_file: Path) -> dict[str, float]:
    rows = [json.loads(line) for line in metrics_file.read_text().splitlines()]
    rows = [r for r in rows if "timing_s/step" in r][1:]  # the first step includes warm-up
    keys = sorted({k for r in rows for k in r
                   if k.startswith(("timing_s/", "perf/", "rollout/logprob_diff", "response_length/mean"))})
    return {k: sum(r.get(k, 0.0) for r in rows) / len(rows) for k in keys}


def run(out: Path, rollout: str = "vllm", backend: str = "fsdp", shape: str = "0.5b", steps: int = 6,
        sets: list[str] | None = None, tag: str = "", min_groups: int = GROUPS) -> dict[str, float]:
    """One `rlc launch` of the benchmark; its summary (means over the steps after the first)."""
    out.mkdir(parents=True, exist_ok=True)
    model_dir = build(out, shape, min_groups)
    cfg = config(out, model_dir, rollout, backend, steps, shape)
    run_dir = out / f"run-{rollout}-{backend}-{shape}{'-' + tag if tag else ''}"
    subprocess.run(["rm", "-rf", str(run_dir)], check=True)
    flags = [arg for kv in sets or [] for arg in ("--set", kv)]
    code = subprocess.run([sys.executable, "-m", "rlc.cli", "launch", str(cfg), "--run-dir", str(run_dir), *flags],
                          env={**os.environ, "PYTHONUNBUFFERED": "1"}).returncode
    if code != 0:
        sys.exit(f"FAIL: the run exited {code}")
    return summarise(run_dir / "metrics.jsonl")


def shape_arguments(parser: argparse.ArgumentParser) -> None:
    """--shape, --steps and --out, as every benchmark run at these shapes takes them."""
    parser.add_argument("--shape", default="0.5b", choices=sorted(SHAPES))
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--out", type=Path, default=Path("/tmp/rlc-bench"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rollout", default="vllm", choices=["vllm", "hf"])
    parser.add_argument("--backend", default="fsdp", choices=["fsdp", "megatron"])
    shape_arguments(parser)
    parser.add_argument("--set", action="append", default=[], help="passed on to `rlc launch --set`")
    parser.add_argument("--tag", default="", help="suffix of the run directory, to keep runs apart")
    args = parser.parse_args()
    summary = run(args.out, args.rollout, args.backend, args.shape, args.steps, args.set, args.tag)
    print(json.dumps({"rollout": args.rollout, "backend": args.backend, "shape": args.shape, "set": args.set,
                      **summary}, indent=1))


if __name__ == "__main__":
    main()
