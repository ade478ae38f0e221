"""Run the plan on this machine: the rendered launch_local.sh starts a Ray head on 127.0.0.1 and the driver."""

from __future__ import annotations

import os
from importlib.util import find_spec
from pathlib import Path

from rlc.diagnostics import CompileError, Diagnostic
from rlc.executors.process import run_streaming
from rlc.plan import LaunchPlan


def execute(plan: LaunchPlan, scripts: list[Path]) -> int:
    _check_installed(plan.requires)
    (script,) = scripts
    return run_streaming(["bash", str(script)], env=dict(os.environ))


def _check_installed(requires: dict[str, str]) -> None:
    """Checked here, not by `rlc validate`: a config is often validated on a laptop that will never train."""
    missing = [Diagnostic(f"this run needs `{module}`, which is not installed here", hint=f"pip install '{extra}'")
               for module, extra in requires.items() if not _importable(module)]
    if missing:
        raise CompileError(missing)


def _importable(module: str) -> bool:
    try:
        return find_spec(module) is not None
    except ModuleNotFoundError:  # a missing parent package
        return False
