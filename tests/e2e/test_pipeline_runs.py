"""Off-policy pipelining on CPU: one training rank, one HF rollout rank of its own, weights over gloo in buckets.

A pipelined run (max_staleness 1) trains each batch with the policy one update behind at most; a run that may not
lag (max_staleness 0) must equal, metric for metric, the colocated run of the same seed, where the rollout reads
the trainer's weights in place: any bit lost in the bucketed transfer would change the samples or their
log-probs. Weights travel in 1 MiB buckets, so the tiny model takes several.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import ray
from e2e_runs import read_metrics, write_run_dir

from rlc_runtime.__main__ import load_run_config
from rlc_runtime.trainer import train
from rlc_runtime.workers.group import connect_ray

pytestmark = pytest.mark.slow
SEPARATE = {"hybrid_engine": False,
            "rollout": {"n_gpus_per_node": 1, "checkpoint_engine": {"update_weights_bucket_megabytes": 1}}}


@pytest.fixture(scope="module", autouse=True)
def cluster() -> Iterator[None]:
    connect_ray(num_cpus=2)
    yield
    ray.shutdown()


def _run(directory: Path, steps: int, **sections: dict) -> list[dict[str, float]]:
    write_run_dir(directory, **{"trainer": {"total_training_steps": steps}} | sections)
    train(load_run_config(directory), directory)
    return read_metrics(directory)


def test_pipelined_run_stays_within_the_staleness_bound(tmp_path: Path) -> None:
    rows = _run(tmp_path, 2, actor_rollout_ref=SEPARATE, algorithm={
        "max_staleness": 1, "rollout_correction": {"rollout_is": "token", "rollout_is_threshold": 5.0}})
    assert [r["perf/staleness"] for r in rows] == [0, 1]
    assert all(r["timing_s/update_weights"] >= 0 for r in rows)
    # Step 1's samples come from the trainer's own weights (HF in fp32 on both sides: log-probs equal up to the
    # batching's rounding), so every importance weight pi_old / pi_rollout is 1; step 2's batch was sampled by
    # the policy before the first update while its old log-probs are the trainer's after it, so they spread.
    fresh, stale = rows
    assert fresh["rollout/logprob_diff"] < 1e-5
    assert 1 - 1e-4 < fresh["rollout_corr/rollout_is_min"] <= fresh["rollout_corr/rollout_is_max"] < 1 + 1e-4
    assert stale["rollout/logprob_diff"] > 1e-2
    assert stale["rollout_corr/rollout_is_max"] - stale["rollout_corr/rollout_is_min"] > 0.05


def test_no_staleness_equals_the_colocated_run(tmp_path: Path) -> None:
    colocated = _run(tmp_path / "colocated", 2)
    separate = _run(tmp_path / "separate", 2, actor_rollout_ref=SEPARATE)
    assert [r["perf/staleness"] for r in separate] == [0, 0]
    keys = ("critic/score/mean", "actor/pg_loss", "actor/grad_norm", "response_length/mean", "actor/entropy")
    assert [[r[k] for k in keys] for r in separate] == [[r[k] for k in keys] for r in colocated]
