"""Learning that cannot be faked: each algorithm family must raise the score on a task where the tiny model's
habit is wrong (examples/yaml/plus_one.yaml: the reward wants the sum plus one, the model answers the sum).

A step's `critic/score/mean` starts near 0 there, and an update that only sharpens the policy lowers it, so a rise
of 0.1 between the mean of the first five steps and the last five is learning. The control is the same run with
a learning rate of 1e-12 (the schema requires lr > 0): what the metric does by sampling noise alone. Runs start
the way users start them, `rlc launch` in a subprocess; 10 steps each, one test per family.
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
TASK = ROOT / "examples/yaml/plus_one.yaml"


def launch(run_dir: Path, *overrides: str) -> list[dict[str, float]]:
    sets = [arg for key_value in overrides for arg in ("--set", key_value)]
    proc = subprocess.run([sys.executable, "-m", "rlc.cli", "launch", str(TASK), "--run-dir", str(run_dir),
                           "--offline", *sets], capture_output=True, text=True, timeout=600, cwd=ROOT,
                          env={**os.environ, "RAY_ADDRESS": ""})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def rise(rows: list[dict[str, float]], key: str = "critic/score/mean") -> float:
    scores = [row[key] for row in rows]
    return sum(scores[-5:]) / 5 - sum(scores[:5]) / 5


def test_grpo_learns_and_starts_near_zero(tmp_path: Path) -> None:
    rows = launch(tmp_path)
    assert rows[0]["critic/score/mean"] < 0.15  # the habit is wrong: the task is not already solved
    assert rise(rows) >= 0.1, [r["critic/score/mean"] for r in rows]


def test_control_at_learning_rate_zero_does_not_rise(tmp_path: Path) -> None:
    rows = launch(tmp_path, "actor_rollout_ref.actor.optim.lr=1e-12")
    assert rise(rows) <= 0.03, [r["critic/score/mean"] for r in rows]


def test_gspo_learns(tmp_path: Path) -> None:
    rows = launch(tmp_path, "actor_rollout_ref.actor.policy_loss.loss_mode=gspo",
                  "actor_rollout_ref.actor.loss_agg_mode=seq-mean-token-mean",
                  "actor_rollout_ref.actor.clip_ratio_low=0.0003", "actor_rollout_ref.actor.clip_ratio_high=0.0004")
    assert rise(rows) >= 0.1, [r["critic/score/mean"] for r in rows]


def test_dapo_learns_with_dynamic_sampling_and_overlong_shaping(tmp_path: Path) -> None:
    rows = launch(tmp_path, "algorithm.filter_groups.enable=true", "algorithm.filter_groups.metric=acc",
                  "algorithm.filter_groups.max_num_gen_batches=20", "reward_model.overlong_buffer.enable=true",
                  "reward_model.overlong_buffer.len=2", "reward_model.overlong_buffer.penalty_factor=0.1",
                  "actor_rollout_ref.actor.clip_ratio_high=0.28")
    assert all(row["train/num_gen_batches"] >= 1 for row in rows)
    assert "reward/overlong_reward/mean" in rows[0]
    assert rise(rows) >= 0.1, [r["critic/score/mean"] for r in rows]


def test_rloo_learns(tmp_path: Path) -> None:
    rows = launch(tmp_path, "algorithm.adv_estimator=rloo")
    assert rise(rows) >= 0.1, [r["critic/score/mean"] for r in rows]


def test_reinforce_plus_plus_baseline_learns(tmp_path: Path) -> None:
    rows = launch(tmp_path, "algorithm.adv_estimator=reinforce_plus_plus_baseline")
    assert rise(rows) >= 0.1, [r["critic/score/mean"] for r in rows]


def test_ppo_with_gae_and_a_critic_learns(tmp_path: Path) -> None:
    rows = launch(tmp_path, "algorithm.adv_estimator=gae", "critic.optim.lr=1e-3")
    assert "critic/vf_loss" in rows[0]
    assert rise(rows) >= 0.1, [r["critic/score/mean"] for r in rows]
