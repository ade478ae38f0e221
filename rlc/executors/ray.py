"""Submit the plan to an existing Ray cluster ($RAY_ADDRESS) with `ray job submit`, following its logs.

The `ray` CLI is used rather than Ray's Python API so that the launcher never imports ray. Ctrl-C stops the job
on the cluster (`ray job stop`), not only the local log follower.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from rlc.diagnostics import CompileError, Diagnostic
from rlc.executors.process import run_streaming
from rlc.plan import LaunchPlan


def execute(plan: LaunchPlan, scripts: list[Path]) -> int:
    address = os.environ.get("RAY_ADDRESS")
    if not address:
        raise CompileError([Diagnostic("the ray executor needs RAY_ADDRESS (the cluster to submit to)",
                                       hint=f"start one with {plan.run_dir}/ray_head.sh, then export RAY_ADDRESS")])
    # The `ray` command installed beside this Python comes first, so an un-activated venv's rlc works too.
    env = {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    if shutil.which("ray", path=env["PATH"]) is None:
        raise CompileError([Diagnostic("the `ray` command is not installed here", hint="pip install 'rlc[runtime]'")])
    submit = next(s for s in scripts if s.name == "submit_ray.sh")
    submission_id = env.setdefault("RLC_SUBMISSION_ID", f"rlc-{Path(plan.run_dir).name}")
    code = run_streaming(["bash", str(submit)], env=env)
    if code == 130:
        print(f"rlc: stopping Ray job {submission_id}", file=sys.stderr)
        subprocess.run(["ray", "job", "stop", f"--address={address}", submission_id], check=False, env=env)
    return code
