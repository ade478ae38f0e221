"""Build examples/models/tiny-qwen2: a tiny Qwen2 that has seen the arithmetic task's format, not mastered it.

Deterministic (seeded). Steps: write the task data (examples/data), train the tokenizer on it, build the model, and
give it a short supervised warm-up so that sampling at temperature 1 answers in the right format and is right
part of the time: GRPO then has something to improve. Run from the repo root:

    python examples/models/build_tiny.py
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import torch

from rlc_runtime.tiny import build_model, build_tokenizer

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "examples" / "models" / "tiny-qwen2"
DATA = ROOT / "examples" / "data"
SFT_STEPS = 150


def problems(seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    return [(f"{a}+{b}=", str(a + b)) for a, b in ((rng.randint(0, 9), rng.randint(0, 9)) for _ in range(400))]


def write_data() -> list[tuple[str, str]]:
    import pandas as pd

    DATA.mkdir(parents=True, exist_ok=True)
    train, test = problems(1), problems(2)[:64]
    for name, rows in (("train", train), ("test", test)):
        frame = pd.DataFrame([{
            "data_source": "arith", "prompt": [{"role": "user", "content": q}],
            "reward_model": {"style": "rule", "ground_truth": a}, "extra_info": {"index": i},
        } for i, (q, a) in enumerate(rows)])
        frame.to_parquet(DATA / f"arith_{name}.parquet", index=False)
        with open(DATA / f"arith_{name}.jsonl", "w") as out:
            for q, a in rows:
                info = json.dumps({"type": "math_verifiable", "answer": {"value": a}})
                out.write(json.dumps({"messages": [{"role": "user", "content": q}], "verification_info": info,
                                      "data_source": "arith"}) + "\n")
    return train


def main() -> None:
    train = write_data()
    tokenizer = build_tokenizer([q + a for q, a in train] * 3, vocab_size=300)
    model = build_model("qwen2", vocab_size=len(tokenizer), eos_token_id=tokenizer.eos_token_id,
                        pad_token_id=tokenizer.pad_token_id, seed=0)
    rng = random.Random(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    for _step in range(SFT_STEPS):
        batch = rng.sample(train, 32)
        # A noisy teacher: a third of the answers are off by one, so the warm model is right only part of the time.
        texts = [tokenizer.apply_chat_template([{"role": "user", "content": q}, {"role": "assistant", "content":
                 a if rng.random() < 0.6 else str(int(a) + rng.choice((-1, 1)))}], tokenize=False) for q, a in batch]
        encoded = tokenizer(texts, return_tensors="pt", padding=True)
        labels = encoded.input_ids.masked_fill(encoded.attention_mask == 0, -100)
        loss = model(**encoded, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(OUT)
    tokenizer.save_pretrained(OUT)
    print(f"wrote {OUT}; final SFT loss {loss.item():.3f}")


if __name__ == "__main__":
    main()
