"""Build the tool-use task (examples/data/tool_sums_*.parquet) and its model (examples/models/tiny-qwen2-tools).

The task is two-digit addition ("23+45="), which the 1.5 MB model cannot do in its head. It was taught, on a
supervised pass, two habits: in 40% of its examples it calls the calculator of examples/tools/calculator.yaml
(`<tool_call>{"name": "add", "arguments": {"a": 23, "b": 45}}</tool_call>`) and copies the answer from the tool's
reply; otherwise it writes a two-digit guess at once. Sampled at temperature 1 it calls in about one answer of
eight at first, so the starting score is about 0.13, and GRPO with multi-turn rollout
(examples/yaml/tool_sums.yaml) raises it by reinforcing the tool call (measured: 0.13 -> 0.99 in 10 steps). A
run without tools cannot. Deterministic; run from the repository root (about 15 minutes on 2 busy cores):

    python examples/models/build_tiny_tools.py
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from pathlib import Path

import torch

from rlc_runtime.tiny import build_model, build_tokenizer, task_texts

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "examples" / "models" / "tiny-qwen2-tools"
DATA = ROOT / "examples" / "data"
SFT_STEPS = 1500
P_TOOL = 0.4
SPLITS = {"train": (11, 400), "test": (12, 64)}


def problems(seed: int, count: int) -> list[tuple[int, int]]:
    rng = random.Random(seed)
    return [(rng.randint(10, 49), rng.randint(10, 49)) for _ in range(count)]


def call_text(a: int, b: int) -> str:
    return "<tool_call>" + json.dumps({"name": "add", "arguments": {"a": a, "b": b}}) + "</tool_call>"


def tool_reply(a: int, b: int) -> str:
    return f"{a} + {b} = {a + b}\n"  # what rlc_runtime.tools.calculator.AddTool answers


def segments(a: int, b: int, use_tool: bool, rng: random.Random) -> list[tuple[str, bool]]:
    """The conversation as the chat template renders it, cut into (text, trained on) pieces."""
    start = [(f"<|bos|><|user|>{a}+{b}=<|assistant|>", False)]
    if not use_tool:
        return [*start, (f"{rng.randint(20, 98)}<|eos|>", True)]
    return [*start, (call_text(a, b) + "<|eos|>", True), (f"<|system|>{tool_reply(a, b)}<|assistant|>", False),
            (f"{a + b}<|eos|>", True)]


def encode(tokenizer, pieces: list[tuple[str, bool]]) -> tuple[list[int], list[int]]:
    ids, labels = [], []
    for text, trained in pieces:
        part = tokenizer(text, add_special_tokens=False).input_ids
        ids += part
        labels += part if trained else [-100] * len(part)
    return ids, labels


def warm_up(model, tokenizer, steps: int, batch_size: int = 48, lr: float = 3e-3, seed: int = 0) -> float:
    rng, loss = random.Random(seed), torch.tensor(float("nan"))
    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 - step / steps)
    pool = problems(seed, 2000)
    model.train()
    for step in range(steps):
        rows = [encode(tokenizer, segments(*rng.choice(pool), rng.random() < P_TOOL, rng)) for _ in range(batch_size)]
        width = max(len(ids) for ids, _ in rows)
        input_ids = torch.full((batch_size, width), tokenizer.pad_token_id)
        labels = torch.full((batch_size, width), -100)
        for i, (ids, lab) in enumerate(rows):
            input_ids[i, : len(ids)], labels[i, : len(lab)] = torch.tensor(ids), torch.tensor(lab)
        loss = model(input_ids=input_ids, attention_mask=(input_ids != tokenizer.pad_token_id).long(),
                     labels=labels).loss
        loss.backward()
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        if step % 100 == 0:
            print(f"step {step} loss {loss.item():.3f}", flush=True)
    model.eval()
    return loss.item()


def write_data() -> None:
    import datasets

    for split, (seed, count) in SPLITS.items():
        rows = [{"data_source": "tool_sums", "prompt": [{"role": "user", "content": f"{a}+{b}="}],
                 "reward_model": {"style": "rule", "ground_truth": str(a + b)},
                 "extra_info": {"split": split, "index": i}} for i, (a, b) in enumerate(problems(seed, count))]
        parquet = DATA / f"tool_sums_{split}.parquet"
        datasets.Dataset.from_list(rows).to_parquet(f"{parquet}.tmp")
        os.replace(f"{parquet}.tmp", parquet)


def build_model_dir() -> None:
    rng = random.Random(0)
    texts = task_texts() + [call_text(a, b) + tool_reply(a, b) for a, b in problems(99, 300)]
    tokenizer = build_tokenizer(texts, vocab_size=400)
    model = build_model("qwen2", len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, seed=0)
    print("final loss", warm_up(model, tokenizer, SFT_STEPS, seed=rng.randint(0, 0)))
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        setattr(model.generation_config, key, getattr(tokenizer, key))
    tmp = Path(tempfile.mkdtemp(prefix=f".{MODEL.name}.", dir=MODEL.parent))
    tmp.chmod(0o755)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    if MODEL.exists():
        shutil.rmtree(MODEL)
    os.replace(tmp, MODEL)


if __name__ == "__main__":
    write_data()
    build_model_dir()
    print(f"wrote {DATA}/tool_sums_*.parquet and {MODEL}")
