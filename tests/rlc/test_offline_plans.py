"""Plans without the Hub: validate, show, resolve and `launch --dry-run` work with the Hub out of reach (its
endpoint a closed loopback port, or HF_HUB_OFFLINE=1); a reference that cannot be pinned stays as written and is
marked in the output and in plan.json, and a real launch refuses it unless --no-pin."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml
from hubserver import HubServer
from test_launch import BASE
from typer.testing import CliRunner

from rlc.cli import app

OLMO = "allenai/OLMo-2-0425-1B"
BRANCH = "stage1-step1000-tokens4B"


def hub_config(tmp_path: Path, revision: str = BRANCH) -> Path:
    tree = json.loads(json.dumps(BASE))
    tree["actor_rollout_ref"]["model"] = {"path": OLMO, "revision": revision}
    tree["trainer"] |= {"device": "cuda", "n_gpus_per_node": 1}
    path = tmp_path / "hub.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


def rlc(*args: object) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def test_closed_endpoint_plans_unpinned_and_launch_refuses(tmp_path: Path, hub_server: HubServer) -> None:
    sha = hub_server.add_repo(OLMO, files={"config.json": "{}"})
    hub_server.create_branch(OLMO, BRANCH)
    cfg = hub_config(tmp_path)
    started = time.monotonic()
    with hub_server.down():  # HF_ENDPOINT now points at a closed loopback port
        assert rlc("validate", cfg)[0] == 0
        code, out, err = rlc("resolve", cfg)
        assert code == 0, err
        assert "# NOT PINNED" in out and "actor_rollout_ref.model.revision: model allenai/OLMo" in out
        assert yaml.safe_load(out)["actor_rollout_ref"]["model"]["revision"] == BRANCH  # as written
        assert (f"hub.yaml:7:5: warning: actor_rollout_ref.model.revision: not pinned: model {OLMO} at {BRANCH}: "
                f"the Hub at {hub_server.url} cannot be reached") in err
        code, out, _ = rlc("show", cfg, "--explain", "actor_rollout_ref.model.revision")
        assert code == 0 and "NOT PINNED" in out
        code, out, err = rlc("launch", cfg, "--dry-run", "--run-dir", tmp_path / "dry")
        assert code == 0, err
        plan = json.loads((tmp_path / "dry" / "plan.json").read_text())
        assert list(plan["unpinned"]) == ["actor_rollout_ref.model.revision"]
        assert plan["memory"] is None and "memory estimate skipped: allenai/OLMo" in err
        assert "no config.json on this machine" in err
        code, _, err = rlc("launch", cfg, "--run-dir", tmp_path / "real")
        assert code == 1 and "could not be pinned to a commit" in err and "--no-pin" in err
        assert not (tmp_path / "real").exists()
        code, _, err = rlc("launch", cfg, "--dry-run", "--preflight", "--no-pin", "--executor", "slurm",
                           "--run-dir", tmp_path / "accepted")
        assert code == 0, err
        assert "--no-pin: actor_rollout_ref.model.revision is not pinned" in err
        # A full commit sha needs no Hub to be pinned.
        code, out, _ = rlc("resolve", hub_config(tmp_path, revision=sha))
        assert code == 0 and "NOT PINNED" not in out
    assert time.monotonic() - started < 60  # refused connections fail at once: no minutes of retries
    code, _, err = rlc("launch", cfg, "--dry-run", "--run-dir", tmp_path / "online")
    assert code == 0, err
    plan = json.loads((tmp_path / "online" / "plan.json").read_text())
    assert plan["unpinned"] == {}
    # A resume stays on the commit the run was pinned to: the branch moved since, or the Hub is out of reach.
    hub_server.commit(OLMO, {"config.json": '{"moved": true}'}, branch=BRANCH)
    code, _, err = rlc("launch", cfg, "--dry-run", "--resume", "--run-dir", tmp_path / "online")
    assert code == 0 and "kept (the run is unchanged)" in err, err
    with hub_server.down():
        code, _, err = rlc("launch", cfg, "--dry-run", "--resume", "--run-dir", tmp_path / "online")
    assert code == 0 and "kept (the run is unchanged)" in err and "not pinned" not in err, err


def test_hf_hub_offline_without_a_cache(tmp_path: Path, hub_server: HubServer,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, out, err = rlc("resolve", hub_config(tmp_path))
    assert code == 0, err
    assert "NOT PINNED" in out and "not in the local Hugging Face cache" in out
    assert hub_server.requests == []  # offline means not asking
