"""What a user sees when a run cannot start: one message on stderr naming what failed, exit status 1."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from e2e_runs import ROOT, write_run_dir

pytestmark = pytest.mark.slow


def test_model_that_cannot_load_names_the_worker(tmp_path: Path) -> None:
    model = tmp_path / "broken-model"
    shutil.copytree(ROOT / "examples/models/tiny-qwen2", model)
    (model / "model.safetensors").write_bytes(b"not a safetensors file")  # the tokenizer still loads
    run_dir = tmp_path / "run"
    write_run_dir(run_dir, actor_rollout_ref={"model": {"path": str(model)}})
    proc = subprocess.run([sys.executable, "-m", "rlc_runtime", str(run_dir)], capture_output=True, text=True,
                          timeout=180, env={**os.environ, "RAY_ADDRESS": ""})
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if line.startswith("rlc_runtime: error:")]
    assert len(errors) == 1, proc.stderr
    assert "train worker rank 0 failed in build: ModelLoadError: cannot load the model" in errors[0]
    assert str(model) in errors[0]
    assert "Traceback" not in proc.stderr
    assert 'in build\n    self.actor = make_engine' in (run_dir / "error.log").read_text()  # the remote traceback


def test_missing_model_fails_before_ray_starts(tmp_path: Path) -> None:
    write_run_dir(tmp_path, actor_rollout_ref={"model": {"path": str(tmp_path / "nowhere")}})
    proc = subprocess.run([sys.executable, "-m", "rlc_runtime", str(tmp_path)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.startswith("rlc_runtime: error: cannot load the tokenizer of " + str(tmp_path / "nowhere"))
    assert "Traceback" not in proc.stderr and "Ray" not in proc.stderr
