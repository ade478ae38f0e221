"""A token in the environment, referenced from the config, reaches no file, no output and no uploaded byte.

The config names `${oc.env:HF_TOKEN}` and `${oc.env:WANDB_API_KEY}` (in Ray's runtime_env, where verl users put
them). Every command a user would run on it runs for real, as a subprocess: validate, resolve, show, launch
--dry-run, and a real CPU run (the quickstart's tiny model, two steps) that uploads its checkpoint to the loopback
Hub. Then every file under the test's directory, every line printed, every file of the uploaded repo (read back
from the Hub server) and the logs of the Ray cluster the run started are searched for either value.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from e2e_runs import ROOT

pytestmark = pytest.mark.slow
TOKEN = "hf_e2eSecretToken0123456789abcdef"
WANDB_KEY = "wandb0e2e0secret0key0123456789abcdef"
SECRETS = (TOKEN.encode(), WANDB_KEY.encode())
RAY_TEMP = Path(os.environ.get("RAY_TMPDIR", "/tmp")) / "ray"


def _config(path: Path) -> Path:
    config = yaml.safe_load((ROOT / "examples/yaml/quickstart.yaml").read_text())
    config["data"] |= {"train_files": str(ROOT / "examples/data/arith_train.parquet"), "train_batch_size": 4,
                       "val_files": str(ROOT / "examples/data/arith_test.parquet"), "val_max_samples": 8}
    config["actor_rollout_ref"]["model"]["path"] = str(ROOT / "examples/models/tiny-qwen2")
    config["actor_rollout_ref"]["actor"] |= {"ppo_mini_batch_size": 2, "ppo_micro_batch_size_per_gpu": 8}
    config["actor_rollout_ref"]["rollout"] |= {"n": 4, "log_prob_micro_batch_size_per_gpu": 16}
    config["trainer"] |= {"total_training_steps": 2, "save_freq": -1, "test_freq": -1, "val_before_train": False,
                          "logger": ["console", "jsonl", "tensorboard"]}
    config["hf_upload"] = {"enabled": True, "repo_id": "tester/secret-run"}
    config["ray_kwargs"] = {"ray_init": {"runtime_env": {"env_vars": {
        "HF_TOKEN": "${oc.env:HF_TOKEN}", "WANDB_API_KEY": "${oc.env:WANDB_API_KEY}"}}}}
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def test_the_token_stays_a_reference_everywhere(tmp_path: Path, hub_server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", hub_server.add_token(TOKEN))
    monkeypatch.setenv("WANDB_API_KEY", WANDB_KEY)
    config = _config(tmp_path / "secret.yaml")
    printed: list[str] = []

    def rlc(*args: str | Path, timeout: float = 60) -> str:
        proc = subprocess.run([sys.executable, "-m", "rlc.cli", *map(str, args)], capture_output=True, text=True,
                              timeout=timeout, env={**os.environ, "RAY_ADDRESS": ""}, cwd=tmp_path)
        printed.extend([proc.stdout, proc.stderr])
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc.stdout + proc.stderr

    rlc("validate", config)
    assert "HF_TOKEN: ${oc.env:HF_TOKEN}" in rlc("resolve", config)
    rlc("resolve", config, "-o", tmp_path / "resolved.yaml")
    assert "'${oc.env:WANDB_API_KEY}'" in rlc("show", config, "--explain", "ray_kwargs")
    rlc("launch", config, "--dry-run", "--run-dir", tmp_path / "dry")
    run_dir, started = tmp_path / "run", time.time()
    out = rlc("launch", config, "--run-dir", run_dir, timeout=600)
    assert "uploaded" in out and "step 2/2" in out

    # The upload happened, with the token: the loopback Hub accepts writes only from a token it issued.
    uploaded = hub_server.files_at("tester/secret-run")
    assert {"config.json", "model.safetensors", "README.md"} <= set(uploaded)
    assert "HF_TOKEN: ${oc.env:HF_TOKEN}" in uploaded["README.md"].decode()
    assert "tensorboard" in {p.name for p in run_dir.iterdir()}  # a logger wrote files, and they are scanned too
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(written) > 20
    leaks = [str(p) for p in written if any(s in p.read_bytes() for s in SECRETS)]
    leaks += [f"printed: {text[:80]!r}" for text in printed if TOKEN in text or WANDB_KEY in text]
    leaks += [f"uploaded: {name}" for name, data in uploaded.items() if any(s in data for s in SECRETS)]
    ray_logs = [p for session in RAY_TEMP.glob("session_*") if session.stat().st_mtime >= started
                for p in (session / "logs").rglob("*") if p.is_file()]
    leaks += [f"Ray's log {p}" for p in ray_logs if any(s in p.read_bytes() for s in SECRETS)]
    assert not leaks, leaks
