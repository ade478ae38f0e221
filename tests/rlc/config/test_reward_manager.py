"""verl's reward managers: dapo's overlong penalty from reward_kwargs, prime run as naive, other arguments named."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from rlc.cli import app
from rlc.config.reward import OverlongBuffer, overlong_shaping

BASE = {"data": {"train_files": "data/train.parquet", "train_batch_size": 16, "max_response_length": 1024},
        "actor_rollout_ref": {"model": {"path": "Qwen/Qwen2-0.5B"},
                              "actor": {"ppo_mini_batch_size": 8, "ppo_micro_batch_size_per_gpu": 4},
                              "rollout": {"name": "hf", "n": 2}},
        "trainer": {"device": "cpu", "n_gpus_per_node": 1}}
DAPO_KWARGS = {"overlong_buffer_cfg": {"enable": True, "len": 256, "penalty_factor": 1.0, "log": False},
               "max_resp_len": 1024}


def validate(tmp_path: Path, reward_model: dict) -> tuple[int, list[dict]]:
    file = tmp_path / "cfg.json"
    file.write_text(json.dumps(BASE | {"reward_model": reward_model}))
    result = CliRunner().invoke(app, ["validate", "--format", "json", str(file)])
    return result.exit_code, json.loads(result.output or "[]")


def test_dapo_manager_takes_its_overlong_buffer_from_reward_kwargs() -> None:
    # verl's main_ppo passes reward_kwargs to the dapo manager: its buffer and max_resp_len count, not the recipe's
    buffer, max_len = overlong_shaping("dapo", {**DAPO_KWARGS, "max_resp_len": 900}, OverlongBuffer(), 1024)
    assert (buffer.enable, buffer.len, buffer.penalty_factor, max_len) == (True, 256, 1.0, 900)
    buffer, max_len = overlong_shaping("naive", DAPO_KWARGS, OverlongBuffer(), 1024)  # naive ignores them, as verl
    assert (buffer.enable, max_len) == (False, 1024)


def test_verl_dapo_script_keys_validate_without_a_word(tmp_path: Path) -> None:
    code, found = validate(tmp_path, {"reward_manager": "dapo", "reward_kwargs": DAPO_KWARGS})
    assert code == 0 and found == [], found


def test_other_arguments_and_prime_are_named(tmp_path: Path) -> None:
    code, found = validate(tmp_path, {"reward_manager": "prime", "reward_kwargs": {"num_processes": 8}})
    assert code == 0
    messages = {d["path"]: d["message"] for d in found}
    assert "the same scores" in messages["reward_model.reward_manager"]
    assert "takes no argument 'num_processes'" in messages["reward_model.reward_kwargs.num_processes"]


def test_a_penalty_set_twice_or_too_long_is_an_error(tmp_path: Path) -> None:
    code, found = validate(tmp_path, {"reward_manager": "dapo", "reward_kwargs": DAPO_KWARGS,
                                      "overlong_buffer": {"enable": True, "len": 64}})
    assert code == 1 and "set twice" in found[0]["message"]
    too_long = {**DAPO_KWARGS, "overlong_buffer_cfg": {"enable": True, "len": 2048}}
    code, found = validate(tmp_path, {"reward_manager": "dapo", "reward_kwargs": too_long})
    assert code == 1 and found[0]["path"] == "reward_model.reward_kwargs.overlong_buffer_cfg.len"
