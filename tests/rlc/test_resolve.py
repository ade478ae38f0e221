"""Environment references: checked with this machine's environment, written back as references, resolved by the
runtime from its own; literal credentials redacted where printed and kept private where written."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from rlc.cli import app
from rlc.launch import LaunchRequest, prepare
from rlc_runtime.__main__ import load_run_config

ROOT = Path(__file__).parents[2]
CONFIG = f"""\
data:
  train_files: ${{oc.env:DATA_DIR}}/arith_train.parquet
  train_batch_size: 4
actor_rollout_ref:
  model:
    path: {ROOT}/examples/models/tiny-qwen2
  actor:
    ppo_mini_batch_size: 2
    ppo_micro_batch_size_per_gpu: 2
  rollout:
    name: hf
    n: 2
trainer:
  device: cpu
  n_gpus_per_node: 1
  project_name: ${{oc.env:PROJECT}}
  experiment_name: run-${{trainer.project_name}}
ray_kwargs:
  ray_init:
    runtime_env:
      env_vars:
        HF_TOKEN: ${{oc.env:HF_TOKEN}}
        DB_PASSWORD: hunter2-literal
        MAX_TOKENS: "512"
"""


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DATA_DIR", str(ROOT / "examples/data"))
    monkeypatch.setenv("PROJECT", "here")
    monkeypatch.setenv("HF_TOKEN", "hf_unit_secret_value")
    path = tmp_path / "cfg.yaml"
    path.write_text(CONFIG)
    return path


def test_run_dir_keeps_references_and_the_runtime_resolves_them(config: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    plan, _, _ = prepare(LaunchRequest(config, run_dir=tmp_path / "run", offline=True))
    text = (tmp_path / "run" / "config.resolved.yaml").read_text()
    written = yaml.safe_load(text)
    assert written["trainer"]["project_name"] == "${oc.env:PROJECT}"
    assert written["trainer"]["experiment_name"] == "run-${trainer.project_name}"  # reads the environment too
    assert written["data"]["train_files"] == "${oc.env:DATA_DIR}/arith_train.parquet"
    assert written["ray_kwargs"]["ray_init"]["runtime_env"]["env_vars"]["HF_TOKEN"] == "${oc.env:HF_TOKEN}"
    assert "hf_unit_secret_value" not in text and "hf_unit_secret_value" not in (tmp_path / "run/plan.json").read_text()
    assert plan.name == "here/run-here"  # the compiler planned with this machine's values
    # The user wrote a literal password into the config: the runtime needs it, so the file is its owner's alone.
    assert stat.S_IMODE((tmp_path / "run" / "config.resolved.yaml").stat().st_mode) == 0o600

    monkeypatch.setenv("PROJECT", "there")  # the machine that runs the job has its own environment
    monkeypatch.setenv("HF_TOKEN", "hf_runtime_value")
    runtime = load_run_config(tmp_path / "run")
    assert runtime.trainer.project_name == "there" and runtime.trainer.experiment_name == "run-there"
    assert runtime.ray_kwargs.ray_init.runtime_env["env_vars"]["HF_TOKEN"] == "hf_runtime_value"


def test_a_value_the_compiler_rewrote_is_written_as_rewritten(config: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("DATA_DIR", "examples/data")  # relative: the launcher spells it out for the workers
    prepare(LaunchRequest(config, run_dir=tmp_path / "run", offline=True))
    written = yaml.safe_load((tmp_path / "run" / "config.resolved.yaml").read_text())
    assert written["data"]["train_files"] == str(ROOT / "examples/data/arith_train.parquet")
    assert written["trainer"]["project_name"] == "${oc.env:PROJECT}"


def test_resolve_and_show_print_references_and_redact_literals(config: Path, tmp_path: Path) -> None:
    resolved = CliRunner().invoke(app, ["resolve", str(config), "--offline"])
    assert resolved.exit_code == 0, resolved.output
    env_vars = yaml.safe_load(resolved.stdout)["ray_kwargs"]["ray_init"]["runtime_env"]["env_vars"]
    assert env_vars == {"HF_TOKEN": "${oc.env:HF_TOKEN}", "DB_PASSWORD": "<redacted>", "MAX_TOKENS": "512"}
    shown = CliRunner().invoke(app, ["show", str(config), "--offline", "--explain", "ray_kwargs"])
    assert shown.exit_code == 0, shown.output
    assert "'${oc.env:HF_TOKEN}'" in shown.stdout and "'<redacted>'" in shown.stdout and "'512'" in shown.stdout
    assert "hunter2" not in resolved.output + shown.output and "hf_unit_secret" not in resolved.output + shown.output

    out = tmp_path / "resolved.yaml"  # a file the user asked for keeps what a run needs, readable by them only
    assert CliRunner().invoke(app, ["resolve", str(config), "--offline", "-o", str(out)]).exit_code == 0
    assert "hunter2-literal" in out.read_text() and stat.S_IMODE(out.stat().st_mode) == 0o600


def test_a_misplaced_secret_is_named_by_its_reference(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_never_printed")
    monkeypatch.setenv("DATA_DIR", str(ROOT / "examples/data"))
    monkeypatch.setenv("PROJECT", "here")
    config = tmp_path / "cfg.yaml"
    config.write_text(CONFIG.replace("n_gpus_per_node: 1", "n_gpus_per_node: ${oc.env:HF_TOKEN}"))
    result = CliRunner().invoke(app, ["validate", str(config)])
    assert result.exit_code == 1
    assert 'trainer.n_gpus_per_node: expected an integer, got "${oc.env:HF_TOKEN}"' in result.output
    assert "hf_never_printed" not in result.output


def test_an_unset_variable_warns_in_validate_and_stops_the_launch(config: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """What a verl script does with `trainer.nnodes=$NNODES` and no NNODES: bash passes an empty word. rlc cannot
    know the launching machine's value, so validation names it and goes on; a launch refuses until it is set."""
    monkeypatch.delenv("DATA_DIR")
    monkeypatch.delenv("NNODES", raising=False)
    config.write_text(CONFIG.replace("n_gpus_per_node: 1", "n_gpus_per_node: 1\n  nnodes: ${oc.env:NNODES}"))
    checked = CliRunner().invoke(app, ["validate", str(config)])
    assert checked.exit_code == 0, checked.output
    assert "trainer.nnodes: environment variable NNODES is not set here; `rlc launch` needs it" in checked.output
    assert "data.train_files: environment variable DATA_DIR is not set here" in checked.output
    assert "valid: 1 file(s), 0 error(s), 2 warning(s)" in checked.output

    launched = CliRunner().invoke(app, ["launch", str(config), "--dry-run", "--offline", "--run-dir",
                                        str(tmp_path / "run")])
    assert launched.exit_code == 1
    assert "error: trainer.nnodes: environment variable NNODES is not set here" in launched.output
    assert "error: data.train_files: environment variable DATA_DIR is not set here" in launched.output
    assert not (tmp_path / "run" / "plan.json").exists()

    monkeypatch.setenv("DATA_DIR", str(ROOT / "examples/data"))
    monkeypatch.setenv("NNODES", "1")
    launched = CliRunner().invoke(app, ["launch", str(config), "--dry-run", "--offline", "--run-dir",
                                        str(tmp_path / "run")])
    assert launched.exit_code == 0, launched.output
    assert yaml.safe_load((tmp_path / "run" / "config.resolved.yaml").read_text())["trainer"]["nnodes"] == \
        "${oc.env:NNODES}"
