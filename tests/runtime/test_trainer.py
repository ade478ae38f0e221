"""The controller's pure parts: batch balancing, the reward seam, the run config's errors, generation dumps.

Whole runs (Ray, workers, models) are in tests/e2e.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from rlc.config.defaults import fill_defaults
from rlc.config.root import RLCConfig
from rlc_runtime.__main__ import ConfigError, load_run_config, main
from rlc_runtime.batch import TokenBatch
from rlc_runtime.rewards.manager import RewardManager
from rlc_runtime.trainer import balanced_order, dump_generations, reward_sample

ROOT = Path(__file__).resolve().parents[2]
BASE = {"data": {"train_files": str(ROOT / "examples/data/arith_train.parquet"), "train_batch_size": 4},
        "actor_rollout_ref": {"model": {"path": str(ROOT / "examples/models/tiny-qwen2")},
                              "actor": {"ppo_mini_batch_size": 4, "ppo_micro_batch_size_per_gpu": 4},
                              "rollout": {"name": "hf", "n": 2}},
        "algorithm": {"adv_estimator": "grpo"},
        "trainer": {"device": "cpu", "n_gpus_per_node": 1, "default_local_dir": "ckpt"}}


def _config(**sections: dict) -> RLCConfig:
    tree = json.loads(json.dumps(BASE))
    for name, values in sections.items():
        tree.setdefault(name, {}).update(values)
    return fill_defaults(RLCConfig.model_validate(tree))


def test_balanced_order_equal_sizes_near_equal_tokens() -> None:
    lengths = [10, 1, 9, 2, 8, 3, 7, 4]
    order = balanced_order(lengths, 2)
    assert sorted(order) == list(range(8))
    halves = [sum(lengths[i] for i in order[:4]), sum(lengths[i] for i in order[4:])]
    assert halves == [22, 22]
    assert balanced_order([5, 1, 1, 1], 1) == [0, 1, 2, 3]


def test_rule_rewards_by_data_source() -> None:
    manager = RewardManager(_config())
    rows = [{"data_source": "arith", "ground_truth": '{"type": "math_verifiable", "answer": {"value": "11"}}'},
            {"data_source": "openai/gsm8k", "ground_truth": "42"}]
    samples = [reward_sample(rows[0], "11"), reward_sample(rows[0], "12"), reward_sample(rows[1], "so #### 42")]
    scores, metrics, components = manager.score(samples, step=1)
    assert scores == [1.0, 0.0, 1.0] and metrics == {} and components == []


def test_custom_reward_function_with_extras(tmp_path: Path) -> None:
    source = tmp_path / "my_reward.py"
    source.write_text("def shaped(data_source, solution_str, ground_truth, extra_info=None):\n"
                      "    return {'score': float(solution_str == ground_truth), 'length': len(solution_str)}\n")
    manager = RewardManager(_config(custom_reward_function={"path": str(source), "name": "shaped"}))
    rows = {"data_source": "x", "ground_truth": "ab"}
    samples = [reward_sample(rows, "ab"), reward_sample(rows, "abcd")]
    scores, metrics, components = manager.score(samples, step=None)
    assert scores == [1.0, 0.0] and metrics == {"reward/length/mean": 3.0} and components == []
    # GDPO's reward components: each named key's values in sample order; a key the function lacks is refused.
    assert manager.score(samples, step=1, component_keys=["length", "score"])[2] == [[2.0, 4.0], [1.0, 0.0]]
    with pytest.raises(ValueError, match="gdpo_reward_keys names 'format'.*a dict with keys \\['length', 'score'\\]"):
        manager.score(samples, step=1, component_keys=["format"])


def _write_run(tmp_path: Path, tree: object) -> Path:
    (tmp_path / "config.resolved.yaml").write_text(tree if isinstance(tree, str) else yaml.safe_dump(tree))
    return tmp_path


def test_run_config_round_trip(tmp_path: Path) -> None:
    cfg = _config()
    loaded = load_run_config(_write_run(tmp_path, cfg.model_dump(mode="json")))
    assert loaded == cfg


@pytest.mark.parametrize(("tree", "message"), [
    ("data: [unclosed", "not valid YAML"),
    ("- a list", "expected a mapping"),
    ({**BASE, "trainer": {"devise": "cpu"}}, "trainer.devise: Extra inputs are not permitted"),
    ({**BASE, "data": {**BASE["data"], "train_batch_size": 3}},
     "ppo_mini_batch_size 4 is larger than data.train_batch_size 3"),
    ({**BASE, "trainer": {"default_local_dir": "${trainer.nope}"}}, "trainer.nope"),
])
def test_bad_run_config_is_one_message(tmp_path: Path, tree: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("$", r"\$")):
        load_run_config(_write_run(tmp_path, tree))


def test_main_reports_without_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("rlc_runtime: error: ") and "config.resolved.yaml: not found" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert main([]) == 2


def test_dump_generations(tmp_path: Path) -> None:
    batch = TokenBatch(*(torch.zeros(2, 1),) * 5, meta={"uid": [0, 0], "response_text": ["a", "b"]})
    dump_generations(tmp_path / "gen", 3, [{"prompt_text": "q"}], batch, [1.0, 0.0])
    rows = [json.loads(line) for line in (tmp_path / "gen" / "3.jsonl").read_text().splitlines()]
    assert rows == [{"step": 3, "input": "q", "output": "a", "score": 1.0},
                    {"step": 3, "input": "q", "output": "b", "score": 0.0}]


def test_the_runtime_places_workers_by_plan_json(tmp_path: Path) -> None:
    from rlc.plan import make_plan
    from rlc_runtime.__main__ import load_run_topology
    from rlc_runtime.rollout.base import SamplingParams
    from rlc_runtime.workers.rollout import engine_requests

    config = _config(trainer={"n_gpus_per_node": 2}, actor_rollout_ref={
        **BASE["actor_rollout_ref"], "hybrid_engine": False,
        "rollout": {"name": "vllm", "n": 2, "tensor_model_parallel_size": 2, "n_gpus_per_node": 4}})
    plan = make_plan(config, str(tmp_path), "local").to_json()
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    topology = load_run_topology(tmp_path, config)
    assert (topology.world_size, topology.rollout.world_size, topology.rollout_groups) == (2, 4, [[0, 1], [2, 3]])
    # each engine's ranks get the same prompts and seed; the two engines split the prompts and differ in seed
    requests, slices = engine_requests([[1], [2], [3]], SamplingParams(n=2, seed=5), topology.rollout_groups)
    assert [r[0] for r in requests] == [[[1], [2]], [[1], [2]], [[3]], [[3]]] and slices == [range(2), range(2, 3)]
    assert [r[1].seed for r in requests] == [5, 5, 5 + 1_000_003, 5 + 1_000_003]

    plan["topology"]["rollout_groups"] = [[0], [1], [2], [3]]  # edited by hand: the runtime will not guess
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    with pytest.raises(ConfigError, match="does not match config.resolved.yaml"):
        load_run_topology(tmp_path, config)
