"""Multi-turn rollout with a tool, through `rlc launch`: the tiny model learns to call a calculator.

examples/yaml/tool_sums.yaml: two-digit sums the model cannot do in its head, a calculator (`add`) it calls in about
one answer of eight (examples/models/build_tiny_tools.py). Only answers copied from the calculator are right, so
`critic/score/mean` starts near the calling rate and rises only if GRPO reinforces the call; the control, at a
learning rate of 1e-12, shows what sampling noise alone does. The saved trajectories (trainer.rollout_data_dir)
are read back: tool calls, the tool's replies, and a response mask that is 0 exactly on the reply's tokens,
checked against the tokenizer's own encoding.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from e2e_runs import ROOT

pytestmark = pytest.mark.slow
TASK = ROOT / "examples/yaml/tool_sums.yaml"
MODEL = ROOT / "examples/models/tiny-qwen2-tools"
SMALLER = ("data.train_batch_size=8", "actor_rollout_ref.actor.ppo_mini_batch_size=4",  # half the example's batch
           "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=32")


def launch(run_dir: Path, *overrides: str) -> list[dict[str, float]]:
    sets = [arg for key_value in overrides for arg in ("--set", key_value)]
    proc = subprocess.run([sys.executable, "-m", "rlc.cli", "launch", str(TASK), "--run-dir", str(run_dir),
                           "--offline", *sets], capture_output=True, text=True, timeout=900, cwd=ROOT,
                          env={**os.environ, "RAY_ADDRESS": ""})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_the_model_learns_to_call_the_calculator(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    saved = tmp_path / "trajectories"
    rows = launch(tmp_path / "run", *SMALLER, f"trainer.rollout_data_dir={saved}")
    scores = [row["critic/score/mean"] for row in rows]
    assert sum(scores[-5:]) / 5 - sum(scores[:5]) / 5 >= 0.1, scores
    tokenizer = AutoTokenizer.from_pretrained(MODEL)
    samples = [json.loads(line) for line in (saved / "1.jsonl").read_text().splitlines()]
    called = [s for s in samples if s["trajectory"]["assistant_turns"] == 2]
    assert called and len(called) < len(samples)
    for sample in called:
        messages = sample["trajectory"]["messages"]
        assert [m["role"] for m in messages] == ["user", "assistant", "tool", "assistant"]
        a, b = (int(x) for x in messages[0]["content"].rstrip("=").split("+"))
        assert messages[1]["content"].startswith("<tool_call>") and messages[2]["content"] == f"{a} + {b} = {a + b}\n"
        reply = tokenizer(f"<|system|>{a} + {b} = {a + b}\n<|assistant|>", add_special_tokens=False).input_ids
        ids, mask = sample["response_ids"], sample["response_mask"]
        start = mask.index(0)
        assert ids[start: start + len(reply)] == reply
        assert mask == [1] * start + [0] * len(reply) + [1] * (len(ids) - start - len(reply))
        assert sample["score"] == float(messages[3]["content"] == str(a + b))


def test_control_at_learning_rate_zero_does_not_rise(tmp_path: Path) -> None:
    rows = launch(tmp_path / "run", *SMALLER, "actor_rollout_ref.actor.optim.lr=1e-12")
    scores = [row["critic/score/mean"] for row in rows]
    assert sum(scores[-5:]) / 5 - sum(scores[:5]) / 5 <= 0.07, scores  # sampling noise alone: ~0.03 (one sd)
