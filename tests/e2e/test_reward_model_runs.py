"""Runs rewarded by a reward model: a tiny sequence classifier trained here to score ~1 for a response that
contains the digit 9 and ~0 otherwise (its scores are checked first, on responses it never saw in training).

The task's prompts are plus_one's sums (examples/yaml/plus_one.yaml); the tiny policy answers the sum, which holds
a 9 for about one prompt in ten, so the model's score starts low and only a policy that learns to write 9 raises
it. Its control, at a learning rate of ~0, also mixes the rule score and the model's with rlc's weights and checks
the arithmetic against the rule function and the classifier run here, sample by sample.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from test_learning import TASK, launch, rise
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from rlc_runtime.rewards.rules import compute_score
from rlc_runtime.tiny import build_digit_reward_model

pytestmark = pytest.mark.slow
POLICY = TASK.parents[1] / "models" / "tiny-qwen2"


@pytest.fixture(scope="module")
def digit_rm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_digit_reward_model(tmp_path_factory.mktemp("rm") / "digit9", POLICY, "9")


def reference_score(rm: Path, question: str, response: str) -> float:
    """The classifier's score, computed here with transformers alone."""
    tokenizer = AutoTokenizer.from_pretrained(rm)
    model = AutoModelForSequenceClassification.from_pretrained(rm).eval()
    text = tokenizer.apply_chat_template([{"role": "user", "content": question},
                                          {"role": "assistant", "content": response}], tokenize=False)
    with torch.no_grad():
        return model(**tokenizer(text, add_special_tokens=False, return_tensors="pt")).logits[0, 0].item()


def test_the_reward_model_scores_the_digit(digit_rm: Path) -> None:
    assert [round(reference_score(digit_rm, "4+4=", r)) for r in ("9", "8", "19", "10", "93", "2")] == \
        [1, 0, 1, 0, 1, 0]


def test_a_run_rewarded_by_the_model_alone_learns(tmp_path: Path, digit_rm: Path) -> None:
    rows = launch(tmp_path, "reward_model.enable=true", f"reward_model.model.path={digit_rm}",
                  "reward_model.micro_batch_size_per_gpu=32")
    assert "reward/rule_score/mean" not in rows[0]  # the rule worker is not asked: the model's score alone
    assert rows[0]["critic/score/mean"] < 0.3
    assert rise(rows) >= 0.1, [r["critic/score/mean"] for r in rows]


def test_control_mixes_rule_and_model_scores_and_does_not_rise(tmp_path: Path, digit_rm: Path) -> None:
    """The control of the run above (a learning rate of 1e-12: what sampling noise alone does to the model's score)
    is also the combined run: rule and model scores mixed with rlc's weights, checked step by step and, on the first
    step, sample by sample against the rule function and the classifier run here."""
    dump = tmp_path / "generations"
    rows = launch(tmp_path / "run", "reward_model.enable=true", f"reward_model.model.path={digit_rm}",
                  "reward_model.rule_weight=2.0", "reward_model.model_weight=0.5",
                  "actor_rollout_ref.actor.optim.lr=1e-12", f"trainer.rollout_data_dir={dump}")
    for metrics in rows:
        assert metrics["critic/score/mean"] == pytest.approx(
            2.0 * metrics["reward/rule_score/mean"] + 0.5 * metrics["reward/model_score/mean"], abs=1e-5)
    assert rise(rows, "reward/model_score/mean") <= 0.05, [r["reward/model_score/mean"] for r in rows]
    samples = [json.loads(line) for line in (dump / "1.jsonl").read_text().splitlines()]
    for sample in samples[:8]:
        question = sample["input"].split("<|user|>")[1].split("<|assistant|>")[0]
        a, b = question.rstrip("=").split("+")
        rule = compute_score("arith_plus_one", sample["output"], str(int(a) + int(b) + 1))
        expected = 2.0 * rule + 0.5 * reference_score(digit_rm, question, sample["output"])
        assert sample["score"] == pytest.approx(expected, abs=1e-4), sample
