"""A local run's lifecycle through the commands a user types: `rlc launch`, then from another shell
`rlc status`, `rlc logs`, `rlc stop`, `rlc status` again; the run's whole process group must be gone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from e2e_runs import SMALL, merge, read_metrics

pytestmark = pytest.mark.slow


def _rlc(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rlc.cli", *args], capture_output=True, text=True, timeout=120)


def test_status_logs_and_stop_of_a_local_run(tmp_path: Path) -> None:
    config, run_dir = tmp_path / "long.yaml", tmp_path / "run"
    config.write_text(yaml.safe_dump(merge(SMALL, {"trainer": {"total_training_steps": 500}})))
    launcher = subprocess.Popen([sys.executable, "-m", "rlc.cli", "launch", str(config), "--run-dir", str(run_dir)],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 300
        while not ((run_dir / "metrics.jsonl").exists() and read_metrics(run_dir)):
            assert launcher.poll() is None and time.monotonic() < deadline, launcher.communicate()[0]
            time.sleep(0.5)
        status = _rlc("status", str(run_dir))
        assert status.returncode == 0 and "local job running (process group" in status.stdout, status.stdout
        logs = _rlc("logs", str(run_dir))
        assert logs.returncode == 0 and "step 1/500" in logs.stdout, logs.stdout + logs.stderr
        stopped = _rlc("stop", str(run_dir))
        assert stopped.returncode == 0, stopped.stderr
        out, _ = launcher.communicate(timeout=60)
    finally:
        if launcher.poll() is None:
            launcher.kill()
    assert launcher.returncode != 0
    assert f"rlc status {run_dir}" in out and "step 1/500" in out  # the launcher printed the commands and followed
    status = _rlc("status", str(run_dir))
    assert status.returncode == 1 and "local job stopped" in status.stdout, status.stdout
    assert "rlc_runtime: interrupted" in (run_dir / "launch.log").read_text()  # SIGINT first: a clean stop
    leader = json.loads((run_dir / "job.json").read_text())["pid"]
    with pytest.raises(ProcessLookupError):
        os.killpg(leader, 0)  # nothing of the run's process group is left
    steps = len(read_metrics(run_dir))
    time.sleep(2)
    assert len(read_metrics(run_dir)) == steps
