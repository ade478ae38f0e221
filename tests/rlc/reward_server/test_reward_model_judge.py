"""A reward model beside a generative judge: the reward worker asks `rlc reward-server`, whose llm_judge type asks
the loopback judge of test_reward_judge (a test double: no judge model can run here), while the reward model's
worker group, sharded with FSDP2 over two CPU ranks, scores the same samples (five: one rank scores a pad too).
The score is rlc's weighted sum of the two, checked against the judge's rule (reference answer in the response)
and the classifier run here alone, unsharded. (One Ray cluster and one server serve both checks: CI time.)"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import ray
import torch
from test_reward_judge import FakeJudge, judge, judged_server  # noqa: F401 - fixtures used by name
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

from rlc.config.root import RLCConfig
from rlc.reward_server.process import ServerProcess
from rlc.topology import Placement
from rlc_runtime.rewards.scoring import RewardScoring
from rlc_runtime.workers.group import WorkerGroup, connect_ray
from rlc_runtime.workers.reward import RewardWorker
from rlc_runtime.workers.reward_model import RewardModelWorker

TOKENIZER = Path(__file__).parents[3] / "examples" / "models" / "tiny-qwen2"
SAMPLES = [("Which drug?", "Give antibiotics.", "antibiotics"), ("Which drug?", "Rest.", "antibiotics"),
           ("2+2=", "4", "4"), ("9+9=", "18", "17"), ("1+0=", "1 is it", "1")]


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


@pytest.fixture(scope="module")
def cluster() -> Iterator[None]:
    connect_ray(num_cpus=2)
    yield
    ray.shutdown()


def alone(path: Path, question: str, response: str) -> float:
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path).eval()
    text = tokenizer.apply_chat_template([{"role": "user", "content": question},
                                          {"role": "assistant", "content": response}], tokenize=False)
    with torch.no_grad():
        return model(**tokenizer(text, add_special_tokens=False, return_tensors="pt")).logits[0, 0].item()


def test_judge_and_sharded_reward_model_combine(cluster: None, judge: FakeJudge,  # noqa: F811
                                        judged_server: ServerProcess, reward_model: Path) -> None:  # noqa: F811
    cfg = RLCConfig.model_validate({
        "data": {"train_files": "x.parquet", "train_batch_size": 4},
        "actor_rollout_ref": {"model": {"path": "m"}, "rollout": {"name": "hf", "n": 2}},
        "reward_api": {"enable": True, "api_url": judged_server.url, "timeout": 10},
        "reward_model": {"enable": True, "rule_weight": 3.0, "model_weight": -0.5, "micro_batch_size_per_gpu": 2,
                         "model": {"path": str(reward_model)}}})
    payload = cfg.model_dump(mode="json")
    rules = WorkerGroup("reward", RewardWorker, Placement.one_node(1, "cpu"), "cpu", args=(payload,),
                        distributed=False)
    model = WorkerGroup("reward_model", RewardModelWorker, Placement.one_node(2, "cpu"), "cpu", args=(payload,))
    try:
        model.call("build")
        samples = [{"raw_prompt": [{"role": "user", "content": q}], "response": r,
                    "verification_info": json.dumps({"type": "llm_judge", "answer": {"value": ref}})}
                   for q, r, ref in SAMPLES]
        scores, metrics, *_ = RewardScoring(cfg, rules, model).score(samples, None)
        classes = ray.get([w.__ray_call__.remote(lambda self: type(self.model).__name__) for w in model.workers])
    finally:
        rules.shutdown()
        model.shutdown()
    assert classes == ["FSDPQwen2ForSequenceClassification"] * 2  # fully_shard's wrapper class on both ranks
    verdicts = [float(ref in r) for _, r, ref in SAMPLES]
    assert verdicts == [1.0, 0.0, 1.0, 0.0, 1.0]
    model_scores = [alone(reward_model, q, r) for q, r, _ in SAMPLES]
    assert len(set(model_scores)) == 5  # the samples really differ
    assert scores == pytest.approx([3.0 * v - 0.5 * m for v, m in zip(verdicts, model_scores, strict=True)],
                                   abs=1e-4)
    assert metrics["reward/rule_score/mean"] == pytest.approx(3 / 5)
    assert metrics["reward/model_score/mean"] == pytest.approx(sum(model_scores) / 5, abs=1e-4)
    assert len(judge.requests) >= 5
