"""What the loggers record as the run's config: the file the compiler wrote, never the values the runtime resolved."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from rlc_runtime.loggers import config_to_log


def test_logged_config_keeps_references_and_redacts_literals(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_resolved_at_runtime")
    env_vars = {"HF_TOKEN": "${oc.env:HF_TOKEN}", "WANDB_API_KEY": "literal-key", "HF_HOME": "/data/hf"}
    config = {"trainer": {"project_name": "p"}, "ray_kwargs": {"ray_init": {"runtime_env": {"env_vars": env_vars}}}}
    (tmp_path / "config.resolved.yaml").write_text(yaml.safe_dump(config))
    logged = config_to_log(tmp_path)
    assert logged["ray_kwargs"]["ray_init"]["runtime_env"]["env_vars"] == {
        "HF_TOKEN": "${oc.env:HF_TOKEN}", "WANDB_API_KEY": "<redacted>", "HF_HOME": "/data/hf"}
    assert logged["trainer"] == {"project_name": "p"}
