"""The reward model's worker group on a real local Ray cluster: sharded with FSDP2 over two CPU ranks, it scores
as the unsharded model does alone, sample by sample (five samples over two ranks: one rank scores a pad too)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import ray
import torch
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

from rlc.config.root import RLCConfig
from rlc.topology import Placement
from rlc_runtime.rewards.scoring import RewardScoring
from rlc_runtime.workers.group import WorkerGroup, connect_ray
from rlc_runtime.workers.reward_model import RewardModelWorker

TOKENIZER = Path(__file__).parents[3] / "examples" / "models" / "tiny-qwen2"
QUESTIONS = [("3+4=", "7"), ("9+9=", "18"), ("1+0=", "1 is it"), ("5+5=", ""), ("2+7=", "9")]


@pytest.fixture(scope="module")
def cluster() -> Iterator[None]:
    connect_ray(num_cpus=2)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def reward_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("rm") / "rm"
    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER)
    config = AutoConfig.for_model("qwen2", vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                                  num_hidden_layers=2, num_attention_heads=1, head_dim=64, num_key_value_heads=1,
                                  num_labels=1, pad_token_id=tokenizer.pad_token_id,
                                  architectures=["Qwen2ForSequenceClassification"])
    torch.manual_seed(0)
    AutoModelForSequenceClassification.from_config(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def alone(path: Path, question: str, response: str) -> float:
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path).eval()
    text = tokenizer.apply_chat_template([{"role": "user", "content": question},
                                          {"role": "assistant", "content": response}], tokenize=False)
    with torch.no_grad():
        return model(**tokenizer(text, add_special_tokens=False, return_tensors="pt")).logits[0, 0].item()


def test_sharded_over_two_ranks_it_scores_as_one_model_alone(cluster: None, reward_model: Path) -> None:
    cfg = RLCConfig.model_validate({
        "data": {"train_files": "x.parquet", "train_batch_size": 4},
        "actor_rollout_ref": {"model": {"path": "m"}, "rollout": {"name": "hf", "n": 2}},
        "reward_model": {"enable": True, "model_weight": 2.0, "micro_batch_size_per_gpu": 2,
                         "model": {"path": str(reward_model)}}})
    group = WorkerGroup("reward_model", RewardModelWorker, Placement.one_node(2, "cpu"), "cpu",
                        args=(cfg.model_dump(mode="json"),))
    try:
        group.call("build")
        samples = [{"raw_prompt": [{"role": "user", "content": q}], "response": r} for q, r in QUESTIONS]
        scores, metrics, _ = RewardScoring(cfg, None, group).score(samples, 1)
    finally:
        group.shutdown()
    expected = [alone(reward_model, q, r) for q, r in QUESTIONS]
    assert scores == pytest.approx([2.0 * e for e in expected], abs=1e-4)
    assert metrics["reward/model_score/mean"] == pytest.approx(sum(expected) / 5, abs=1e-4)
    assert len(set(expected)) == 5  # the samples really differ
