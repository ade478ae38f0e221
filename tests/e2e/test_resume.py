"""A run killed with SIGKILL and launched again resumes from its last checkpoint and finishes, nothing lost.

Real processes: `python -m rlc_runtime RUN_DIR`, each starting its own Ray on 127.0.0.1, killed with
`os.kill(pid, SIGKILL)` as an out-of-memory killer or a preempted node would.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from e2e_runs import read_metrics, write_run_dir

from rlc_runtime.checkpoint import complete_checkpoints

pytestmark = pytest.mark.slow


def _launch(run_dir: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "rlc_runtime", str(run_dir)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, "RAY_ADDRESS": ""})


def _wait_for_step(run_dir: Path, proc: subprocess.Popen[str], step: int, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read()
        if (run_dir / "metrics.jsonl").exists() and any(r["step"] >= step for r in read_metrics(run_dir)):
            return
        time.sleep(0.2)
    raise AssertionError(f"step {step} not reached in {timeout} s")


def test_sigkill_then_resume_finishes_the_run(tmp_path: Path) -> None:
    write_run_dir(tmp_path, trainer={"total_training_steps": 5, "save_freq": 2})
    first = _launch(tmp_path)
    _wait_for_step(tmp_path, first, 1)
    # Ray's GCS and raylet share the driver's fate, and the workers (holding the models, on GPUs the memory)
    # go with the raylet. Ray's two helper agents notice later, on their own (within a minute or two).
    family = [p for p in psutil.Process(first.pid).children(recursive=True) if "Agent" not in p.name()]
    assert any("TrainWorker" in p.name() for p in family)
    _wait_for_step(tmp_path, first, 3)  # the step-2 checkpoint is complete before step 3 starts
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    _, alive = psutil.wait_procs(family, timeout=30)
    assert not alive, f"processes outlived the killed driver: {[p.name() for p in alive]}"
    killed_run = {r["step"]: r for r in read_metrics(tmp_path)}
    # A fast step may finish step 4 and its checkpoint before the kill lands: resume from whichever is last.
    saved = [p.name for p in complete_checkpoints(tmp_path / "checkpoints")]
    last = int(saved[-1].rsplit("_", 1)[1])
    assert last in (2, 4) and saved == [f"global_step_{s}" for s in range(2, last + 1, 2)]

    second = _launch(tmp_path)
    out, _ = second.communicate(timeout=300)
    assert second.returncode == 0, out
    assert f"resumed from {tmp_path / 'checkpoints' / f'global_step_{last}'} (step {last} of 5)" in out
    rows = read_metrics(tmp_path)
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5]  # every step once: the steps after it were run again
    assert rows[:last] == [killed_run[s] for s in range(1, last + 1)]
    # The first resumed step draws the same prompts and samples as the killed one did (seeded by step).
    if last + 1 in killed_run:
        assert rows[last]["critic/score/mean"] == killed_run[last + 1]["critic/score/mean"]
        assert rows[last]["response_length/mean"] == killed_run[last + 1]["response_length/mean"]
    assert [p.name for p in complete_checkpoints(tmp_path / "checkpoints")] == [
        "global_step_2", "global_step_4", "global_step_5"]
    assert (tmp_path / "curves.png").exists()
