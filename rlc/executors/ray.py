"""Submit the plan to a Ray cluster's job API (`ray_cluster.address`, else $RAY_ADDRESS) and follow its logs.

The `ray` CLI is used rather than Ray's Python API so that the launcher never imports ray. Token authentication
is Ray's own: the CLI reads `RAY_AUTH_MODE` (from the plan) and the token from `$RAY_AUTH_TOKEN`,
`$RAY_AUTH_TOKEN_PATH` or `~/.ray/auth_token`; rlc never reads or writes the token.

Secrets reach the job by reference: the variables in `plan.pass_env` are read from this process's environment at
submit time into a runtime-env file only its owner can read, outside the run directory, deleted as soon as
`ray job submit` returns. The values are then in the cluster's job table (readable through the job API by holders
of the cluster's token, who can run code there anyway) and in the job's processes' environments; the rendered
`ray start` lines keep Ray's daemons at warning level, so its runtime-env agent does not log them.
Ctrl-C stops the job on the cluster (`ray job stop`), not only the local log follower.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rlc.diagnostics import CompileError, Diagnostic
from rlc.executors import record
from rlc.executors.process import run_streaming
from rlc.plan import LaunchPlan
from rlc.render import submission_id


def execute(plan: LaunchPlan, scripts: list[Path]) -> int:
    address = plan.ray.get("address") or os.environ.get("RAY_ADDRESS")
    if not address:
        raise CompileError([Diagnostic("the ray executor needs the cluster's job API address",
                                       ("ray_cluster", "address"),
                                       hint=f"start a head with {plan.run_dir}/ray_head.sh, then set "
                                            "ray_cluster.address or export RAY_ADDRESS=http://HEAD_IP:8265")])
    require_token(plan)
    job = {"address": address, "submission_id": os.environ.get("RLC_SUBMISSION_ID") or _fresh_id(plan),
           "auth": plan.ray.get("auth", "token"), "auth_token_path": plan.ray.get("auth_token_path")}
    submit = next(s for s in scripts if s.name == "submit_ray.sh")
    code = _submit(submit, plan, job)
    if code != 0:
        print(f"rlc: `ray job submit` failed (exit code {code}); nothing was started", file=sys.stderr)
        return code
    run_dir = Path(plan.run_dir)
    record.write(run_dir, "ray", **job)
    record.announce(run_dir, f"submitted Ray job {job['submission_id']} to {address}")
    code = run_streaming(_ray(job, "logs", "--follow"), env=_env(job))
    if code == 130:
        print(f"rlc: stopping Ray job {job['submission_id']}", file=sys.stderr)
        subprocess.run(_ray(job, "stop"), check=False, env=_env(job))
        return 130
    state = _state(job)
    print(f"rlc: Ray job {job['submission_id']}: {state}", file=sys.stderr)
    return 0 if state == "SUCCEEDED" else 1


def require_token(plan: LaunchPlan) -> None:
    """With token authentication on, a Ray token must be where Ray looks (Ray's own error comes from each node,
    later and less plainly). Only its presence is checked; rlc never reads it."""
    if plan.ray.get("auth") != "token":
        return
    path = plan.ray.get("auth_token_path") or os.environ.get("RAY_AUTH_TOKEN_PATH")
    places = [Path(path).expanduser()] if path else [Path.home() / ".ray" / "auth_token"]
    if not os.environ.get("RAY_AUTH_TOKEN") and not any(p.is_file() for p in places):
        raise CompileError([Diagnostic(
            f"ray_cluster.auth is token, but no Ray token is here: RAY_AUTH_TOKEN is not set and {places[0]} does "
            "not exist", ("ray_cluster", "auth"),
            hint="`ray get-auth-token --generate` writes ~/.ray/auth_token (every node needs the same token), or "
                 "set ray_cluster.auth_token_path; ray_cluster.auth: disabled turns authentication off")])


def _fresh_id(plan: LaunchPlan) -> str:
    """Ray keeps every submission id: a resumed run directory gets a new one."""
    base = submission_id(plan)
    return base if not (Path(plan.run_dir) / record.RECORD).exists() else f"{base}-{time.strftime('%Y%m%d-%H%M%S')}"


def _submit(script: Path, plan: LaunchPlan, job: dict) -> int:
    env = _env(job) | {"RLC_SUBMISSION_ID": job["submission_id"], "RAY_ADDRESS": job["address"]}
    missing = [name for name in plan.pass_env if name not in os.environ]
    if missing:
        print(f"rlc: note: {', '.join(missing)} not set here, so the job will not have it", file=sys.stderr)
    env_vars = plan.env | {name: os.environ[name] for name in plan.pass_env if name in os.environ}
    fd, path = tempfile.mkstemp(prefix="rlc-runtime-env-", suffix=".json")  # mode 0600, outside the run dir
    try:
        with os.fdopen(fd, "w") as f:
            json.dump({"env_vars": env_vars}, f)
        return subprocess.run(["bash", str(script)], env=env | {"RLC_RUNTIME_ENV": path}, check=False).returncode
    finally:
        os.unlink(path)


def status(run_dir: Path, job: dict) -> tuple[str, int]:
    state = _state(job)
    return f"{state} (Ray job {job['submission_id']} at {job['address']})", 0 if state in (
        "PENDING", "RUNNING", "SUCCEEDED") else 1


def logs(run_dir: Path, job: dict, follow: bool) -> int:
    return subprocess.run(_ray(job, "logs", *(["--follow"] if follow else [])), env=_env(job),
                          check=False).returncode


def stop(run_dir: Path, job: dict) -> int:
    return subprocess.run(_ray(job, "stop"), env=_env(job), check=False).returncode


def _state(job: dict) -> str:
    """PENDING, RUNNING, STOPPED, SUCCEEDED or FAILED, as `ray job status` words it; UNKNOWN with Ray's reason."""
    result = subprocess.run(_ray(job, "status"), env=_env(job), capture_output=True, text=True, check=False)
    said = re.sub(r"\x1b\[[0-9;]*m", "", result.stdout + result.stderr)
    for pattern, state in ((r"Status for job '[^']*': (\w+)", None), (r"Job '[^']*' succeeded", "SUCCEEDED"),
                           (r"Job '[^']*' was stopped", "STOPPED"), (r"Job '[^']*' failed", "FAILED")):
        if found := re.search(pattern, said):
            return state or found.group(1)
    reason = (said.strip().splitlines() or ["no answer"])[-1]
    return f"UNKNOWN: {reason}"


def _ray(job: dict, command: str, *extra: str) -> list[str]:
    return ["ray", "job", command, f"--address={job['address']}", *extra, job["submission_id"]]


def _env(job: dict) -> dict[str, str]:
    """This environment, with the `ray` installed beside this Python first (an un-activated venv's rlc works too)
    and the cluster's authentication mode."""
    env = {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
           "RAY_AUTH_MODE": job.get("auth") or "token"}
    if job.get("auth_token_path"):
        env["RAY_AUTH_TOKEN_PATH"] = job["auth_token_path"]
    if shutil.which("ray", path=env["PATH"]) is None:
        raise CompileError([Diagnostic("the `ray` command is not installed here", hint="pip install 'rlc[runtime]'")])
    return env
