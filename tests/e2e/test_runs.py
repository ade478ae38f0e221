"""GRPO and PPO runs of a few steps, in-process on one local Ray cluster (started once for the module).

Each test checks what a user would look at: the metrics under verl's names, the checkpoints on disk, the plot.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import ray
from e2e_runs import ROOT, read_metrics, write_run_dir

from rlc_runtime.__main__ import load_run_config
from rlc_runtime.checkpoint import LATEST_FILE, complete_checkpoints
from rlc_runtime.trainer import train
from rlc_runtime.workers.group import connect_ray

pytestmark = pytest.mark.slow
STEP_KEYS = ("critic/score/mean", "critic/score/max", "critic/score/min", "critic/rewards/mean",
             "critic/advantages/mean", "response_length/mean", "response_length/max", "response_length/clip_ratio",
             "prompt_length/mean", "actor/pg_loss", "actor/entropy", "actor/pg_clipfrac", "actor/ppo_kl",
             "actor/grad_norm", "actor/lr", "timing_s/gen", "timing_s/reward", "timing_s/old_log_prob",
             "timing_s/adv", "timing_s/update_actor", "timing_s/update_weights", "timing_s/step", "perf/throughput",
             "timing_s/rollout_sleep",
             "perf/total_num_tokens", "rollout/logprob_diff")


@pytest.fixture(scope="module", autouse=True)
def cluster() -> Iterator[None]:
    connect_ray(num_cpus=2)
    yield
    ray.shutdown()


def _run(run_dir: Path) -> None:
    train(load_run_config(run_dir), run_dir)


def test_grpo_one_rank(tmp_path: Path) -> None:
    write_run_dir(tmp_path, trainer={"total_training_steps": 4, "save_freq": 2, "test_freq": 2,
                                     "val_before_train": True, "max_actor_ckpt_to_keep": 1,
                                     "logger": ["console", "jsonl", "tensorboard"],
                                     "rollout_data_dir": str(tmp_path / "rollouts")})
    _run(tmp_path)
    rows = read_metrics(tmp_path)
    assert [r["step"] for r in rows] == [0, 1, 2, 3, 4]
    for row in rows[1:]:
        assert set(STEP_KEYS) <= set(row), set(STEP_KEYS) - set(row)
        assert row["rollout/logprob_diff"] < 1e-3  # HF rollout and trainer agree: the weight sync works
        assert 0 <= row["critic/score/mean"] <= 1
        assert 0 <= row["timing_s/rollout_sleep"] <= row["timing_s/gen"]  # the handoff, timed within gen
        assert 0 < row["timing_s/gen_engine"] < row["timing_s/gen"]  # the engine's share, timed on its rank
    assert "val-core/arith/reward/mean@1" in rows[0] and "val-core/arith/reward/mean@1" in rows[2]
    assert "timing_s/testing" in rows[4] and "timing_s/testing" not in rows[3]
    checkpoints = complete_checkpoints(tmp_path / "checkpoints")
    assert [p.name for p in checkpoints] == ["global_step_4"]  # step 2 pruned (keep 1)
    assert (tmp_path / "checkpoints" / LATEST_FILE).read_text() == "4"
    actor = checkpoints[0] / "actor"
    assert (actor / "model_world_size_1_rank_0.pt").is_file() and (actor / "optim_world_size_1_rank_0.pt").is_file()
    assert not (checkpoints[0] / "critic").exists()
    assert (tmp_path / "curves.png").stat().st_size > 10_000
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert sorted(p.name for p in (tmp_path / "rollouts").iterdir()) == ["1.jsonl", "2.jsonl", "3.jsonl", "4.jsonl"]


def test_grpo_two_ranks_gloo_with_kl_loss(tmp_path: Path) -> None:
    write_run_dir(tmp_path, trainer={"n_gpus_per_node": 2, "save_freq": 3},
                  actor_rollout_ref={"actor": {"use_kl_loss": True, "ppo_mini_batch_size": 4,
                                               "ppo_micro_batch_size_per_gpu": 4}})
    _run(tmp_path)
    rows = read_metrics(tmp_path)
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert all("actor/kl_loss" in r and r["rollout/logprob_diff"] < 1e-3 for r in rows)
    # One mini-batch per step: step 1's update starts from the reference weights, later ones do not.
    assert rows[0]["actor/kl_loss"] == pytest.approx(0.0, abs=1e-6)
    assert rows[1]["actor/kl_loss"] > 0
    actor = tmp_path / "checkpoints" / "global_step_3" / "actor"
    assert {p.name for p in actor.glob("model_world_size_2_rank_*.pt")} == {
        "model_world_size_2_rank_0.pt", "model_world_size_2_rank_1.pt"}


def test_grpo_ulysses_two_ranks_one_sequence_parallel_group(tmp_path: Path) -> None:
    # sp 2 on 2 ranks: one data-parallel group; the old and reference log-probs of the split sequences must equal
    # the HF rollout's own (logprob_diff) and the actor's in the first update (kl_loss 0)
    ulysses = {"ulysses_sequence_parallel_size": 2}
    write_run_dir(tmp_path, trainer={"n_gpus_per_node": 2, "total_training_steps": 2},
                  actor_rollout_ref={"actor": {"use_kl_loss": True, "ppo_mini_batch_size": 4,
                                               "ppo_micro_batch_size_per_gpu": 4, **ulysses}, "ref": ulysses})
    _run(tmp_path)
    rows = read_metrics(tmp_path)
    assert [r["step"] for r in rows] == [1, 2]
    assert all(r["rollout/logprob_diff"] < 1e-3 for r in rows)
    assert rows[0]["actor/kl_loss"] == pytest.approx(0.0, abs=1e-6) and rows[1]["actor/kl_loss"] > 0


def test_gae_with_critic_and_kl_in_reward(tmp_path: Path) -> None:
    write_run_dir(tmp_path, algorithm={"adv_estimator": "gae", "use_kl_in_reward": True,
                                       "kl_ctrl": {"type": "adaptive", "kl_coef": 0.01}},
                  critic={"optim": {"lr": 1e-3}}, trainer={"critic_warmup": 2, "save_freq": 3})
    _run(tmp_path)
    rows = read_metrics(tmp_path)
    assert all("critic/vf_loss" in r and "critic/values/mean" in r and "actor/reward_kl_penalty" in r for r in rows)
    # verl's warm-up rule: the actor is updated from step `critic_warmup` on.
    assert ["actor/pg_loss" in r for r in rows] == [False, True, True]
    assert (tmp_path / "checkpoints" / "global_step_3" / "critic" / "model_world_size_1_rank_0.pt").is_file()


def test_hf_upload_at_the_end(tmp_path: Path, hub_server, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    monkeypatch.setenv("HF_TOKEN", hub_server.add_token("hf_write_token"))
    write_run_dir(tmp_path, trainer={"total_training_steps": 2},  # save_freq -1: the upload forces a checkpoint
                  hf_upload={"enabled": True, "repo_id": "tester/tiny-grpo", "optimizer_save_mode": "full"})
    _run(tmp_path)
    files = hub_server.files_at("tester/tiny-grpo")
    assert {"config.json", "model.safetensors", "tokenizer.json", "README.md", "optimizer.pt"} <= set(files)
    uploaded = AutoModelForCausalLM.from_pretrained("tester/tiny-grpo").state_dict()
    trained = AutoModelForCausalLM.from_pretrained(
        tmp_path / "checkpoints" / "global_step_2" / "actor" / "huggingface").state_dict()
    initial = AutoModelForCausalLM.from_pretrained(ROOT / "examples/models/tiny-qwen2").state_dict()
    assert all(torch.equal(uploaded[k], trained[k]) for k in trained)
    assert not all(torch.equal(initial[k], trained[k]) for k in trained)  # two updates changed the weights
    assert "hf_write_token" not in (tmp_path / "metrics.jsonl").read_text()


def test_hub_down_never_fails_the_run(tmp_path: Path, hub_server, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("HF_TOKEN", hub_server.add_token("hf_write_token"))
    write_run_dir(tmp_path, trainer={"total_training_steps": 1},
                  hf_upload={"enabled": True, "repo_id": "tester/tiny-grpo", "max_retries": 0})
    with hub_server.down():
        _run(tmp_path)  # returns: the run succeeded
    assert complete_checkpoints(tmp_path / "checkpoints")[-1].name == "global_step_1"
    out = capsys.readouterr().out
    assert "hf_upload failed" in out and "global_step_1" in out and "hf_write_token" not in out


def test_rewards_from_the_remote_server(tmp_path: Path) -> None:
    import json

    from rlc.reward_server.process import ServerProcess

    with ServerProcess(log_path=tmp_path / "server.log") as server:
        write_run_dir(tmp_path, trainer={"total_training_steps": 2},  # rows with seed 003's verification_info
                      data={"train_files": str(ROOT / "examples/data/arith_train.jsonl"), "val_files": None},
                      reward_api={"enable": True, "api_url": server.url, "save_dir": str(tmp_path / "rewards")})
        _run(tmp_path)
    rows = read_metrics(tmp_path)
    assert all(r["reward_api/failures"] == 0 and r["reward_api/latency_p50_ms"] > 0 for r in rows)
    for row in rows:
        saved = [json.loads(line) for line in
                 (tmp_path / "rewards" / f"rewards_step_{row['step']}.jsonl").read_text().splitlines()]
        assert len(saved) == 16 and all(s["reply"] == {"score": s["score"]} for s in saved)
        expected = [float(s["response"].strip() == json.loads(s["ground_truth"])["answer"]["value"]) for s in saved]
        assert [s["score"] for s in saved] == expected
        assert sum(s["score"] for s in saved) / 16 == pytest.approx(row["critic/score/mean"])


def test_remax_with_rollout_correction(tmp_path: Path) -> None:
    # The HF rollout samples with the trainer's own weights, so the importance weights are ~1 and nothing is
    # rejected; the greedy baseline rollout runs once per prompt.
    write_run_dir(tmp_path, algorithm={"adv_estimator": "remax", "rollout_correction": {
        "rollout_is": "sequence", "rollout_is_threshold": 2.0, "rollout_rs": "token_k1", "rollout_rs_threshold": 2.0}},
                  trainer={"total_training_steps": 2})
    _run(tmp_path)
    rows = read_metrics(tmp_path)
    for row in rows:
        assert row["rollout_corr/rollout_is_mean"] == pytest.approx(1.0, abs=1e-3)
        assert row["rollout_corr/rollout_rs_masked_fraction"] == 0.0
        assert abs(row["rollout_corr/kl"]) < 1e-4 and "actor/pg_loss" in row


def test_gdpo_components_and_bypass_mode(tmp_path: Path) -> None:
    # GDPO's reward components travel from the reward function's dict through the reward worker to the advantage;
    # bypass mode skips the old-log-prob pass and corrects inside the loss (REINFORCE with token IS weights).
    reward = tmp_path / "parts.py"
    reward.write_text("def parts(data_source, solution_str, ground_truth, extra_info=None):\n"
                      "    digits = float(solution_str.strip().isdigit())\n"
                      "    return {'score': digits, 'digits': digits, 'length': float(len(solution_str))}\n")
    write_run_dir(tmp_path, algorithm={"adv_estimator": "gdpo", "gdpo_reward_keys": ["digits", "length"],
                                       "gdpo_reward_weights": [1.0, 0.1], "rollout_correction": {
                                           "bypass_mode": True, "loss_type": "reinforce", "rollout_is": "token"}},
                  custom_reward_function={"path": str(reward), "name": "parts"}, trainer={"total_training_steps": 1})
    _run(tmp_path)
    row = read_metrics(tmp_path)[0]
    assert "timing_s/old_log_prob" not in row and "rollout/logprob_diff" not in row
    # The trainer's per-sample components and the reward worker's own means are two paths to the same numbers.
    assert row["gdpo/length/mean"] == pytest.approx(row["reward/length/mean"])
    assert row["gdpo/digits/mean"] == pytest.approx(row["critic/score/mean"])
    # Measured between the policy as it updates (several mini-batches) and the rollout's: near 1, not exactly.
    assert 0.5 < row["rollout_corr/rollout_is_mean"] < 1.5 and row["actor/grad_norm"] > 0
