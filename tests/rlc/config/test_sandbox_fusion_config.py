"""verl's sandbox_fusion keys: implemented, validated, and gathered from each place verl reads them to the one the
runtime reads."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from rlc.cli import app
from rlc.config.defaults import fill_defaults
from rlc.config.root import RLCConfig

BASE = {"data": {"train_files": "data/train.parquet", "train_batch_size": 16},
        "actor_rollout_ref": {"model": {"path": "Qwen/Qwen2-0.5B"},
                              "actor": {"ppo_mini_batch_size": 8, "ppo_micro_batch_size_per_gpu": 4},
                              "rollout": {"name": "hf", "n": 2}},
        "trainer": {"device": "cpu", "n_gpus_per_node": 1}}
URL = "http://127.0.0.1:8080/run_code"


def validate(tmp_path: Path, extra: dict[str, Any]) -> tuple[int, list[dict]]:
    file = tmp_path / "cfg.json"
    file.write_text(json.dumps(BASE | extra))
    result = CliRunner().invoke(app, ["validate", "--format", "json", str(file)])
    return result.exit_code, json.loads(result.output or "[]")


def test_verl_script_keys_validate_without_a_word(tmp_path: Path) -> None:
    # run_deepseek7b_llm_sandbox_fusion.sh's keys
    code, found = validate(tmp_path, {"reward_model": {"sandbox_fusion": {"url": URL, "max_concurrent": 128}}})
    assert (code, found) == (0, [])


def test_a_malformed_url_or_limit_is_an_error_at_its_key(tmp_path: Path) -> None:
    code, found = validate(tmp_path, {"reward_model": {"sandbox_fusion": {"url": "localhost:8080/run_code"}}})
    assert code != 0
    assert [(d["path"], d["severity"]) for d in found] == [("reward_model.sandbox_fusion.url", "error")]
    assert "not an http(s) URL" in found[0]["message"]
    code, found = validate(tmp_path, {"sandbox_fusion": {"url": URL, "max_concurrent": 0}})
    assert code != 0 and [d["path"] for d in found] == ["sandbox_fusion.max_concurrent"]


def test_verl_0_9_1_places_reach_the_section_the_runtime_reads() -> None:
    for tree in ({"reward": {"sandbox_fusion": {"url": URL, "max_concurrent": 8}}},
                 {"sandbox_fusion": {"url": URL, "max_concurrent": 8, "memory_limit_mb": None}}):
        sandbox = fill_defaults(RLCConfig.model_validate(BASE | tree)).reward_model.sandbox_fusion
        assert (sandbox.url, sandbox.max_concurrent, sandbox.memory_limit_mb) == (URL, 8, 1024)


def test_two_different_sandboxes_are_an_error_and_an_unused_one_a_warning(tmp_path: Path) -> None:
    code, found = validate(tmp_path, {"reward_model": {"sandbox_fusion": {"url": URL}},
                                      "reward": {"sandbox_fusion": {"url": URL.replace("8080", "9090")}}})
    assert code != 0 and [d["path"] for d in found] == ["reward.sandbox_fusion.url"]
    assert "differs from reward_model.sandbox_fusion" in found[0]["message"]
    code, found = validate(tmp_path, {"reward_model": {"sandbox_fusion": {"url": URL}},
                                      "custom_reward_function": {"path": "my_reward.py"}})
    assert [(d["path"], d["severity"]) for d in found] == [("reward_model.sandbox_fusion.url", "warning")]
    assert "custom_reward_function scores every sample" in found[0]["message"]
