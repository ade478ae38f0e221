"""Executors start a rendered run directory: here (local), on a Ray cluster (ray), or through SLURM (slurm).

Each one is a function `execute(plan, scripts) -> exit code` that streams what the job prints and, on Ctrl-C,
stops everything it started before returning.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from rlc.plan import LaunchPlan

Execute = Callable[[LaunchPlan, list[Path]], int]


def get(name: str) -> Execute:
    if name == "local":
        from rlc.executors.local import execute
    elif name == "ray":
        from rlc.executors.ray import execute
    elif name == "slurm":
        from rlc.executors.slurm import execute
    else:
        raise ValueError(f"unknown executor {name!r}: local, ray or slurm")
    return execute
