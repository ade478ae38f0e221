"""Build the quickstart's bundled task (examples/data) and model (examples/models/tiny-qwen2). Deterministic.

The task is single-digit addition, written twice: in verl's format as parquet (`prompt` messages, `data_source`,
`reward_model.ground_truth`, `extra_info`) and in seed 003's format as JSONL (`messages` + a `verification_info`
JSON string, what the remote reward API reads). The model is a 1.3 MB Qwen2 warmed up on the task by a sloppy
teacher (`rlc_runtime.tiny.warm_up`): greedy decoding gets every sum right, sampling at temperature 1 about 40%,
so GRPO has something to improve. Measured with the quickstart (16 prompts x 8 samples, 4 mini-batches, lr 2e-4):
`critic/score/mean` goes from ~0.5 over the first five steps to ~0.86 over steps 26-30; lr 1e-3 and above collapse.
`arith_plus_one_*.parquet` asks the same questions but rewards the sum plus one: the model's habit is wrong there,
which is what the learning tests (tests/e2e/test_learning.py) need. Run from the repository root (under two
minutes on 2 cores):

    python examples/models/build_tiny.py
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from rlc_runtime.tiny import arith_problems, build_tiny_checkpoint

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "examples" / "models" / "tiny-qwen2"
DATA = ROOT / "examples" / "data"
SFT_STEPS = 2000
SPLITS = {"train": (1, 400), "test": (2, 64)}  # split -> (seed, rows)


def verl_row(question: str, answer: str, split: str, index: int, source: str = "arith") -> dict:
    return {"data_source": source, "prompt": [{"role": "user", "content": question}],
            "reward_model": {"style": "rule", "ground_truth": answer},
            "extra_info": {"split": split, "index": index, "question": question, "answer": answer}}


def seed003_row(question: str, answer: str) -> dict:
    # exact_match, not math_verifiable: the tiny model answers with bare digits, and math_verifiable (as
    # rl_verifier) scores only a \\boxed{} answer.
    info = {"type": "exact_match", "answer": {"value": answer}}
    return {"messages": [{"role": "user", "content": question}], "verification_info": json.dumps(info),
            "data_source": "arith"}


def write_data() -> None:
    import datasets

    DATA.mkdir(parents=True, exist_ok=True)
    for split, (seed, count) in SPLITS.items():
        problems = arith_problems(seed, count)
        parquet, jsonl = DATA / f"arith_{split}.parquet", DATA / f"arith_{split}.jsonl"
        rows = [verl_row(q, a, split, i) for i, (q, a) in enumerate(problems)]
        datasets.Dataset.from_list(rows).to_parquet(f"{parquet}.tmp")
        os.replace(f"{parquet}.tmp", parquet)
        Path(f"{jsonl}.tmp").write_text("".join(json.dumps(seed003_row(q, a)) + "\n" for q, a in problems))
        os.replace(f"{jsonl}.tmp", jsonl)


def write_plus_one_data() -> None:
    """The learning tests' task: the same prompts, but the reward wants the sum plus one. The tiny model's habit
    (the sum) scores 0 there, so a policy update that only sharpens the model cannot raise the score."""
    import datasets

    for split, (seed, count) in SPLITS.items():
        problems = [(q, str(int(a) + 1)) for q, a in arith_problems(seed, count)]
        parquet = DATA / f"arith_plus_one_{split}.parquet"
        rows = [verl_row(q, a, split, i, "arith_plus_one") for i, (q, a) in enumerate(problems)]
        datasets.Dataset.from_list(rows).to_parquet(f"{parquet}.tmp")
        os.replace(f"{parquet}.tmp", parquet)


def main() -> None:
    write_data()
    write_plus_one_data()
    build_tiny_checkpoint(MODEL, "qwen2", sft_steps=SFT_STEPS, seed=0)
    print(f"wrote {DATA} and {MODEL}")


if __name__ == "__main__":
    main()
