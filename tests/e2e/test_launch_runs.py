"""Runs started the way users start them, `rlc launch` in a subprocess: Hub pushes during training, and a resume
through `rlc launch --resume` that ends on exactly the weights of the run it continues.

One uninterrupted run (4 steps, a checkpoint each, `hf_upload.every_n_saves: 2`) is the reference for both: its
pushes land on the loopback Hub (tests/hubserver) as commits, and its step-2 checkpoint is where the resumed run
starts. The Hub fails the first push (HTTP 500, no retries allowed): the push is logged, the run goes on, and the
next save pushes instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from e2e_runs import ROOT, SMALL, merge

pytestmark = pytest.mark.slow
WEIGHTS = "actor/model_world_size_1_rank_0.pt"


def _config(path: Path, **sections: dict) -> Path:
    path.write_text(yaml.safe_dump(merge(SMALL, merge({"trainer": {"total_training_steps": 4, "save_freq": 1}},
                                                      sections))))
    return path


def _rlc(*args: object) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "rlc.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=600, cwd=ROOT, env={**os.environ, "RAY_ADDRESS": ""})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _weights(checkpoint: Path) -> dict:
    from rlc_runtime.export import consolidated_tensors, load_shard

    return dict(consolidated_tensors([load_shard(checkpoint / WEIGHTS)]))


def _titles(hub_server, repo_id: str) -> list[str]:
    repo = hub_server.repo(repo_id)
    titles, sha = [], repo.branches["main"]
    while sha is not None:
        titles.append(repo.commits[sha].title)
        sha = repo.commits[sha].parent
    return titles[::-1]


def test_pushes_during_training_and_a_resume_that_ends_where_the_run_did(tmp_path: Path, hub_server,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setenv("HF_TOKEN", hub_server.add_token("hf_write_token"))
    hub_server.add_repo("tester/tiny-live")  # created beforehand: the first push fails at its first request
    pushed = _config(tmp_path / "pushed.yaml", hf_upload={"enabled": True, "repo_id": "tester/tiny-live",
                                                         "every_n_saves": 2, "max_retries": 0,
                                                         "optimizer_save_mode": None})
    reference = tmp_path / "reference"
    _rlc("launch", pushed, "--dry-run", "--run-dir", reference)
    hub_server.fail(500, times=2)  # preflight's token check (a note), then the first push
    out = _rlc("launch", pushed, "--resume", "--run-dir", reference).stdout
    assert "hf_upload failed" in out and "hf_write_token" not in out
    assert _titles(hub_server, "tester/tiny-live")[1:] == [
        "rlc: gsm8k step 3: retrying the failed push", "rlc: gsm8k final checkpoint"]
    assert {"config.json", "model.safetensors"} <= set(hub_server.files_at("tester/tiny-live"))

    plain = _config(tmp_path / "plain.yaml")
    resumed = tmp_path / "resumed"
    _rlc("launch", plain, "--dry-run", "--run-dir", resumed)
    shutil.copytree(reference / "checkpoints" / "global_step_2", resumed / "checkpoints" / "global_step_2")
    out = _rlc("launch", plain, "--resume", "--run-dir", resumed).stdout
    assert "resumed from" in out and "(step 2 of 4)" in out
    final, expected, start = (_weights(d / "checkpoints" / f"global_step_{step}")
                              for d, step in ((resumed, 4), (reference, 4), (reference, 2)))
    assert final.keys() == expected.keys()
    assert all(torch.equal(final[k], expected[k]) for k in expected)
    assert not all(torch.equal(start[k], expected[k]) for k in expected)  # steps 3 and 4 changed the weights
