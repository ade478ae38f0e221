"""Run the plan on this machine: the rendered launch_local.sh starts a Ray head on 127.0.0.1 and the driver."""

from __future__ import annotations

import os
from pathlib import Path

from rlc.executors.process import run_streaming
from rlc.plan import LaunchPlan


def execute(plan: LaunchPlan, scripts: list[Path]) -> int:
    (script,) = scripts
    return run_streaming(["bash", str(script)], env=dict(os.environ))
