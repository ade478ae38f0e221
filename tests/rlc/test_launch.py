"""A run directory is a record: --resume takes the run's own flags, refuses a changed launch with the differences
key by key (unless --force, which keeps the old files in history/), and a new run never lands in a used folder.

The issue's case: a 4-node SLURM dry run resumed without repeating its flags must stay a 4-node SLURM run."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from typer.testing import CliRunner

from rlc.cli import app

ROOT = Path(__file__).parents[2]
BASE = {
    "algorithm": {"adv_estimator": "grpo"},
    "data": {"train_files": str(ROOT / "examples/data/arith_train.parquet"), "train_batch_size": 16},
    "actor_rollout_ref": {"model": {"path": str(ROOT / "examples/models/tiny-qwen2")},
                          "actor": {"ppo_mini_batch_size": 8, "ppo_micro_batch_size_per_gpu": 1},
                          "rollout": {"name": "hf", "n": 2}},
    "trainer": {"device": "cpu", "n_gpus_per_node": 2, "total_epochs": 15},
}


def config(tmp_path: Path, **trainer: object) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(BASE | {"trainer": BASE["trainer"] | trainer}))
    return path


def launch(*args: object) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["launch", *map(str, args), "--dry-run"])
    return result.exit_code, result.output


def snapshot(run_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}


def test_resume_takes_the_runs_flags_and_rewrites_nothing(tmp_path: Path) -> None:
    cfg, run = config(tmp_path), tmp_path / "run"
    assert launch(cfg, "--run-dir", run, "--executor", "slurm", "--nnodes", "4", "-s", "trainer.total_epochs=3")[0] == 0
    record = json.loads((run / "launch.json").read_text())
    assert (record["executor"], record["nnodes"], record["sets"]) == ("slurm", 4, ["trainer.total_epochs=3"])
    assert (run / "config.source.yaml").read_text() == cfg.read_text()
    before = snapshot(run)
    code, out = launch(cfg, "--run-dir", run, "--resume")
    assert code == 0, out
    assert "executor  slurm" in out and "4 node(s)" in out and "kept (the run is unchanged)" in out
    assert snapshot(run) == before


def test_resume_with_other_flags_or_an_edited_file_is_refused_with_the_differences(tmp_path: Path) -> None:
    cfg, run = config(tmp_path), tmp_path / "run"
    assert launch(cfg, "--run-dir", run, "--executor", "slurm", "--nnodes", "4")[0] == 0
    before = snapshot(run)
    code, out = launch(cfg, "--run-dir", run, "--resume", "--executor", "local", "--nnodes", "1")
    assert code == 1
    assert "~ --executor: slurm -> local" in out and "~ trainer.nnodes: 4 -> 1" in out and "--force" in out
    config(tmp_path, total_epochs=7)  # the file edited since the run started
    code, out = launch(cfg, "--run-dir", run, "--resume")
    assert code == 1 and [line.strip() for line in out.splitlines() if line.startswith("  ~")] == [
        "~ trainer.total_epochs: 15 -> 7"]
    assert snapshot(run) == before  # refused: nothing rewritten


def test_force_keeps_the_old_launch_in_history_and_no_stale_scripts(tmp_path: Path) -> None:
    cfg, run = config(tmp_path), tmp_path / "run"
    assert launch(cfg, "--run-dir", run, "--executor", "slurm")[0] == 0
    old = snapshot(run)
    code, out = launch(cfg, "--run-dir", run, "--resume", "--executor", "local", "--force")
    assert code == 0, out
    (history,) = (run / "history").iterdir()
    assert snapshot(history) == old  # every file of the earlier launch, byte for byte
    assert sorted(p.name for p in run.glob("*.sh")) == ["launch_local.sh"]  # sbatch.sh and ray_*.sh moved away
    assert json.loads((run / "plan.json").read_text())["executor"] == "local"
    assert json.loads((run / "launch.json").read_text())["executor"] == "local"


def test_a_new_run_never_lands_in_a_used_directory(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "notes.txt").write_text("mine")
    code, out = launch(cfg, "--run-dir", tmp_path / "used")
    assert code == 1 and "is not empty (notes.txt)" in out
    assert launch(cfg, "--run-dir", tmp_path / "run", "--executor", "slurm")[0] == 0
    code, out = launch(cfg, "--run-dir", tmp_path / "run")
    assert code == 1 and "already holds a run (a dry run of rlc launch" in out and "--executor slurm" in out
    code, out = launch(cfg, "--run-dir", tmp_path / "nothing", "--resume")
    assert code == 1 and "holds no run" in out
