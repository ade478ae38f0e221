"""Metric reductions against hand-computed values, and the sinks that keep them (jsonl, tensorboard, the plot)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from rlc_runtime.batch import TokenBatch
from rlc_runtime.loggers import Tracking
from rlc_runtime.metrics import (
    data_metrics,
    logprob_diff,
    mean_metrics,
    throughput_metrics,
    timed,
    timing_metrics,
    validation_metrics,
    variance_proxy_metrics,
)
from rlc_runtime.plot import plot_curves


def _batch() -> TokenBatch:
    # Two samples: prompt lengths 2 and 3 (left-padded to 3), responses of 1 and 3 tokens (right-padded to 3).
    attention = torch.tensor([[0, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]])
    response_mask = torch.tensor([[1.0, 0, 0], [1, 1, 1]])
    return TokenBatch(
        input_ids=torch.zeros(2, 6, dtype=torch.long), attention_mask=attention,
        position_ids=torch.zeros(2, 6, dtype=torch.long), responses=torch.zeros(2, 3, dtype=torch.long),
        response_mask=response_mask,
        token_level_rewards=torch.tensor([[1.0, 0, 0], [0, 0, -0.5]]),
        advantages=torch.tensor([[2.0, 9, 9], [-1, -1, 0]]),  # 9s sit on padding and must not count
        returns=torch.tensor([[1.0, 0, 0], [0, 0, 2]]),
        values=torch.tensor([[1.0, 0, 0], [0, 1, 1]]),
        old_log_probs=torch.tensor([[-1.0, 0, 0], [-2, -2, -2]]),
        rollout_log_probs=torch.tensor([[-1.5, 7, 7], [-2, -1, -2]]),
    )


def test_data_metrics_by_hand() -> None:
    m = data_metrics(_batch(), torch.tensor([1.0, 0.0]), max_response_length=3, max_prompt_length=3,
                     use_critic=True)
    assert m["critic/score/mean"] == 0.5 and m["critic/score/max"] == 1 and m["critic/score/min"] == 0
    assert m["critic/rewards/mean"] == pytest.approx(0.25)
    assert m["critic/advantages/mean"] == pytest.approx(0.0)  # (2 - 1 - 1 + 0) / 4
    assert m["critic/advantages/max"] == 2
    assert m["response_length/mean"] == 2 and m["response_length/max"] == 3
    assert m["response_length/clip_ratio"] == 0.5
    assert m["prompt_length/mean"] == 2.5 and m["prompt_length/clip_ratio"] == 0.5
    # returns [1, 0, 0, 2], values [1, 0, 1, 1]: residual [0, 0, -1, 1]
    residual, returns = torch.tensor([0.0, 0, -1, 1]), torch.tensor([1.0, 0, 0, 2])
    assert m["critic/vf_explained_var"] == pytest.approx((1 - residual.var() / (returns.var() + 1e-5)).item())


def test_data_metrics_without_critic_has_no_values() -> None:
    m = data_metrics(_batch(), torch.tensor([1.0, 0.0]), 3, 3, use_critic=False)
    assert "critic/values/mean" not in m and "critic/vf_explained_var" not in m


def test_logprob_diff_uses_mask() -> None:
    assert logprob_diff(_batch()) == pytest.approx((0.5 + 0 + 1 + 0) / 4)


def test_mean_metrics_and_timing() -> None:
    assert mean_metrics([{"a": 1.0, "b": 2.0}, {"a": 3.0}]) == {"a": 2.0, "b": 2.0}
    timings: dict[str, float] = {}
    with timed("gen", timings):
        pass
    with timed("gen", timings):
        pass
    assert 0 < timings["gen"] < 1
    m = timing_metrics({"gen": 0.4, "update_actor": 1.3, "step": 2.0}, _batch())
    assert m["timing_s/gen"] == 0.4 and m["timing_s/step"] == 2.0
    assert m["timing_per_token_ms/gen"] == pytest.approx(100.0)  # 4 response tokens
    assert m["timing_per_token_ms/update_actor"] == pytest.approx(1300 / 9)  # 5 prompt + 4 response tokens


def test_throughput_per_rank() -> None:
    m = throughput_metrics(_batch(), step_seconds=2.0, n_gpus=2)
    assert m["perf/total_num_tokens"] == 9 and m["perf/throughput"] == pytest.approx(2.25)


def test_validation_metrics() -> None:
    m = validation_metrics(["a", "a", "b"], [1.0, 0.0, 1.0], n=1)
    assert m == {"val-core/a/reward/mean@1": 0.5, "val-core/b/reward/mean@1": 1.0,
                 "val-core/all/reward/mean@1": pytest.approx(2 / 3)}


def test_jsonl_appends_and_drops_rerun_steps(tmp_path: Path) -> None:
    tracking = Tracking(["jsonl"], tmp_path, "p", "e", {}, total_steps=5, start_step=0)
    for step in (1, 2, 3):
        tracking.log({"critic/score/mean": step / 10, "bad": float("nan")}, step)
    # Flushed at every step: readable before close, as after a SIGKILL.
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2, 3]
    assert "bad" not in json.loads(lines[0])
    tracking.close()
    with (tmp_path / "metrics.jsonl").open("a") as f:
        f.write('{"step": 4, "critic/sc')  # a line a kill cut short
    resumed = Tracking(["jsonl"], tmp_path, "p", "e", {}, total_steps=5, start_step=2)
    resumed.log({"critic/score/mean": 0.9}, 3)
    resumed.close()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["critic/score/mean"]) for r in rows] == [(1, 0.1), (2, 0.2), (3, 0.9)]


def test_console_and_tensorboard(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tracking = Tracking(["console", "tensorboard"], tmp_path, "p", "e", {}, total_steps=2, start_step=0)
    tracking.log({"critic/score/mean": 0.25, "timing_s/step": 1.5, "val-core/all/reward/mean@1": 0.5}, 1)
    tracking.close()
    out = capsys.readouterr().out
    assert "step 1/2" in out and "score 0.25" in out and "s/step 1.5" in out and "all/reward/mean@1 0.5" in out
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert [e.value for e in events.Scalars("critic/score/mean")] == [0.25]


def test_unknown_logger_warns(tmp_path: Path) -> None:
    with pytest.warns(UserWarning, match="mlflow"):
        Tracking(["mlflow"], tmp_path, "p", "e", {}, 1, 0).close()


def test_plot_writes_png(tmp_path: Path) -> None:
    rows = [{"step": s, "critic/score/mean": s / 10, "actor/pg_loss": -s, "response_length/mean": 5.0}
            for s in range(1, 6)]
    rows.append({"step": 5, "val-core/all/reward/mean@1": 0.4})
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 6, "cut')
    out = plot_curves(tmp_path / "metrics.jsonl", tmp_path / "curves.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000


def test_variance_proxies_by_hand() -> None:
    # Row 0: 2 tokens, pi 0.5, sum pi^2 0.5 -> W = 2 x (1 - 1 + 0.5) = 1, A = 1. Row 1: 1 token, pi 0.25, sum pi^2
    # 0.25 -> W = 0.75, A = -2. E[A^2 W] = (1 + 4 x 0.75) / 2 = 2; grad norm 1: signal 1, noise (2 - 1) / (2 - 1).
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    batch = TokenBatch(torch.zeros(2, 3, dtype=torch.long), torch.ones(2, 3), torch.zeros(2, 3), torch.zeros(2, 2),
                       mask, old_log_probs=torch.tensor([[0.5, 0.5], [0.25, 9.0]]).log(),
                       advantages=torch.tensor([[1.0, 1.0], [-2.0, 7.0]]),
                       sum_pi_squared=torch.tensor([[0.5, 0.5], [0.25, 3.0]]))
    assert variance_proxy_metrics(batch, 1.0) == pytest.approx({
        "variance_proxy/proxy1_signal_strength": 1.0, "variance_proxy/proxy2_total_power": 2.0,
        "variance_proxy/proxy3_pure_noise": 1.0, "variance_proxy/expected_a_squared": 2.5,
        "variance_proxy/expected_w": 0.875})
    # IS weights 2 on row 0: its term x 4 -> (4 + 3) / 2; verl's expected_w sums the scaled w: (4 x 1 + 0.75) / 2.
    batch.rollout_is_weights = torch.tensor([[2.0, 2.0], [1.0, 5.0]])
    found = variance_proxy_metrics(batch, None)
    assert found["variance_proxy/proxy2_total_power"] == pytest.approx(3.5)
    assert found["variance_proxy/expected_w"] == pytest.approx(2.375)
    assert found["variance_proxy/proxy3_pure_noise"] == 0.0  # no gradient norm, no noise estimate
    batch.sum_pi_squared = None
    assert variance_proxy_metrics(batch, 1.0) == {}
