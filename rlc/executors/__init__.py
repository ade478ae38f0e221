"""Executors start a rendered run directory: here (local), on a Ray cluster (ray), or through SLURM (slurm).

Each is a module with `execute(plan, scripts) -> exit code`, which starts the job, records it in the run
directory (record.py) and, on Ctrl-C, stops everything it started; and `status`, `logs`, `stop`, which find the
job again from that record (`rlc status|logs|stop RUN_DIR`).
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module
from pathlib import Path
from types import ModuleType

from rlc.plan import LaunchPlan

Execute = Callable[[LaunchPlan, list[Path]], int]


def module(name: str) -> ModuleType:
    if name not in ("local", "ray", "slurm"):
        raise ValueError(f"unknown executor {name!r}: local, ray or slurm")
    return import_module(f"rlc.executors.{name}")


def get(name: str) -> Execute:
    return module(name).execute
