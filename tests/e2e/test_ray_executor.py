"""`rlc launch --executor ray` against a real two-node Ray cluster on loopback (see ray_cluster.py).

The launcher submits the rendered run directory with `ray job submit`; the job's driver places one CPU training rank
on each node (STRICT_SPREAD), joins them in one gloo group across the nodes and trains. Ctrl-C on the launcher
must stop the job on the cluster, not only the local log follower.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from e2e_runs import SMALL, merge, read_metrics
from ray_cluster import two_node_cluster

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster() -> Iterator[dict[str, str]]:
    with two_node_cluster() as addresses:
        yield addresses


def _config(tmp_path: Path, steps: int) -> Path:
    tree = merge(SMALL, {"trainer": {"nnodes": 2, "n_gpus_per_node": 1, "total_training_steps": steps},
                         "actor_rollout_ref": {"actor": {"ppo_micro_batch_size_per_gpu": 4}}})
    path = tmp_path / "two_nodes.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


def _launch(config: Path, run_dir: Path, dashboard: str, submission_id: str) -> subprocess.Popen[str]:
    env = {**os.environ, "RAY_ADDRESS": dashboard, "RLC_SUBMISSION_ID": submission_id}
    return subprocess.Popen([sys.executable, "-m", "rlc.cli", "launch", str(config), "--executor", "ray",
                             "--run-dir", str(run_dir)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env)


def _job_status(dashboard: str, submission_id: str) -> str:
    from ray.job_submission import JobSubmissionClient  # HTTP only: this process never joins the cluster

    return JobSubmissionClient(dashboard).get_job_status(submission_id).value


def test_a_run_spans_both_nodes_and_finishes(cluster: dict[str, str], tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc = _launch(_config(tmp_path, steps=2), run_dir, cluster["dashboard"], "rlc-two-nodes")
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    placed = re.search(r"2 train rank\(s\) on (\d+) Ray node\(s\): rank 0 on (\w+), rank 1 on (\w+)", out)
    assert placed and placed.group(1) == "2" and placed.group(2) != placed.group(3), out
    assert [row["step"] for row in read_metrics(run_dir)] == [1, 2]
    assert _job_status(cluster["dashboard"], "rlc-two-nodes") == "SUCCEEDED"
    env_vars = json.loads((run_dir / "runtime_env.json").read_text())["env_vars"]
    assert "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER" not in env_vars  # a real cluster keeps its routable addresses


def test_ctrl_c_stops_the_job_on_the_cluster(cluster: dict[str, str], tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc = _launch(_config(tmp_path, steps=500), run_dir, cluster["dashboard"], "rlc-interrupted")
    deadline = time.monotonic() + 300
    while not ((run_dir / "metrics.jsonl").exists() and read_metrics(run_dir)):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0]
        time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out
    assert "stopping Ray job rlc-interrupted" in out
    deadline = time.monotonic() + 60
    while (status := _job_status(cluster["dashboard"], "rlc-interrupted")) not in ("STOPPED", "FAILED", "SUCCEEDED"):
        assert time.monotonic() < deadline, status
        time.sleep(1)
    assert status == "STOPPED"
    steps = len(read_metrics(run_dir))
    time.sleep(3)
    assert len(read_metrics(run_dir)) == steps  # nothing trains on after the stop
