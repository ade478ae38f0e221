"""A reward model's path and head are checked before anything starts: one clear error each, no traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rlc.cli import app
from rlc.config.root import RLCConfig
from rlc.topology import Placement, Topology

BASE = {"algorithm": {"adv_estimator": "grpo"}, "data": {"train_files": "x.parquet", "train_batch_size": 4},
        "trainer": {"n_gpus_per_node": 1, "device": "cpu"}, "actor_rollout_ref": {
            "model": {"path": "m"}, "rollout": {"name": "hf", "n": 2},
            "actor": {"ppo_mini_batch_size": 4, "ppo_micro_batch_size_per_gpu": 1}}}


def validate(tmp_path: Path, reward_model: dict) -> tuple[int, str]:
    file = tmp_path / "cfg.json"  # JSON is YAML
    file.write_text(json.dumps(BASE | {"reward_model": reward_model}))
    result = CliRunner().invoke(app, ["validate", str(file)])
    return result.exit_code, result.output


def checkpoint(tmp_path: Path, architecture: str) -> Path:
    folder = tmp_path / architecture
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"architectures": [architecture], "model_type": "qwen2"}))
    return folder


def test_a_missing_reward_model_is_an_error(tmp_path: Path) -> None:
    code, out = validate(tmp_path, {"enable": True})
    assert code == 1 and "reward_model.enable is true but reward_model.model.path is not set" in out
    assert "Traceback" not in out


def test_a_reward_model_folder_missing_here_is_preflights_to_find(tmp_path: Path) -> None:
    """validate checks configs for other machines (as the policy's path); a launch here checks the folder."""
    assert validate(tmp_path, {"enable": True, "model": {"path": "/no/such/rm"}})[0] == 0
    file = tmp_path / "launch.json"
    file.write_text(json.dumps(BASE | {"reward_model": {"enable": True, "model": {"path": "/no/such/rm"}}}))
    result = CliRunner().invoke(app, ["launch", str(file), "--run-dir", str(tmp_path / "run"), "--dry-run",
                                      "--preflight"])
    assert result.exit_code == 1 and "reward_model.model.path: /no/such/rm does not exist" in result.output


def test_a_reward_model_that_is_not_a_classifier_is_an_error(tmp_path: Path) -> None:
    path = checkpoint(tmp_path, "Qwen2ForCausalLM")
    code, out = validate(tmp_path, {"enable": True, "model": {"path": str(path)}})
    assert code == 1 and "is not a classifier: its config.json architectures are ['Qwen2ForCausalLM']" in out


def test_a_remote_source_that_would_never_be_asked_is_a_warning(tmp_path: Path) -> None:
    path = checkpoint(tmp_path, "Qwen2ForSequenceClassification")
    file = tmp_path / "api.json"
    rm = {"enable": True, "model": {"path": str(path)}}
    file.write_text(json.dumps(BASE | {"reward_model": rm, "reward_api": {"enable": True, "api_url": "http://x:1"}}))
    result = CliRunner().invoke(app, ["validate", str(file)])
    assert result.exit_code == 0 and "reward_api is set but reward_model.rule_weight is 0" in result.output
    code, out = validate(tmp_path, rm | {"rule_weight": 1.0})
    assert code == 0 and "rule_weight is 0" not in out


@pytest.mark.parametrize("architecture", ["Qwen2ForSequenceClassification", "LlamaForTokenClassification"])
def test_classifiers_are_accepted_and_placed_on_ranks_of_their_own(tmp_path: Path, architecture: str) -> None:
    path = checkpoint(tmp_path, architecture)
    code, out = validate(tmp_path, {"enable": True, "model": {"path": str(path)}})
    assert code == 0, out
    cfg = RLCConfig.model_validate(BASE | {"reward_model": {"enable": True, "enable_resource_pool": True,
                                                            "n_gpus_per_node": 2, "model": {"path": str(path)}}})
    topology = Topology.from_config(cfg)
    assert topology.reward_model == Placement("CPU", 1, 2, "PACK")
    assert Topology.from_json(json.loads(json.dumps(topology.to_json()))) == topology


def test_the_plan_asks_each_node_for_the_reward_models_gpus(tmp_path: Path) -> None:
    from rlc.plan import make_plan, summary

    path = checkpoint(tmp_path, "Qwen2ForSequenceClassification")
    tree = BASE | {"trainer": {"n_gpus_per_node": 4, "device": "cuda"},
                   "reward_model": {"enable": True, "enable_resource_pool": True, "n_gpus_per_node": 2,
                                    "model": {"path": str(path)}}}
    plan = make_plan(RLCConfig.model_validate(tree), "runs/x", "local")
    assert plan.gpus_per_node == 6 and plan.topology.reward_model == Placement("GPU", 1, 2, "PACK")
    assert "reward    model on 2 rank(s) of its own (FSDP2)" in summary(plan)
