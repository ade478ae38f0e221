"""Run the plan on this machine: the rendered launch_local.sh starts a Ray head on 127.0.0.1 and the driver.

The job runs in a process group of its own and writes to RUN_DIR/launch.log, which the launcher follows; so
`rlc status|logs|stop` from another shell see the same job, and the job does not depend on the launcher's terminal.
A process is recognised by its id and its start time (field 22 of /proc/PID/stat), so a recycled id is not taken
for the job.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from rlc.executors import record
from rlc.plan import LaunchPlan

LOG = "launch.log"


def execute(plan: LaunchPlan, scripts: list[Path]) -> int:
    (script,) = scripts
    run_dir = Path(plan.run_dir)
    with (run_dir / LOG).open("ab") as log:
        process = subprocess.Popen(["bash", str(script)], env=dict(os.environ), stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    record.write(run_dir, "local", pid=process.pid, start_ticks=_start_ticks(process.pid), log=LOG)
    record.announce(run_dir, f"started process group {process.pid}; its output goes to {run_dir / LOG}")
    try:
        record.follow(run_dir / LOG, lambda: process.poll() is None)
    except KeyboardInterrupt:
        print("\nrlc: stopping (Ctrl-C again to kill)...", file=sys.stderr)
        (run_dir / record.STOPPED).write_text(time.strftime("%Y-%m-%dT%H:%M:%S%z") + "\n")
        try:
            _stop_group(process.pid, lambda: process.poll() is None)
        except KeyboardInterrupt:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        code = 130
    else:
        code = process.returncode
    (run_dir / record.EXIT).write_text(f"{code}\n")
    return code


def status(run_dir: Path, job: dict) -> tuple[str, int]:
    """(what to print, exit code): 0 while it runs or after it succeeded."""
    if _running(job):
        return f"running (process group {job['pid']})", 0
    if (run_dir / record.STOPPED).exists():
        return "stopped", 1
    exit_file = run_dir / record.EXIT
    if not exit_file.exists():
        return "ended (its launcher was gone before it could record the exit code)", 1
    code = exit_file.read_text().strip()
    return ("succeeded", 0) if code == "0" else (f"failed (exit code {code})", 1)


def logs(run_dir: Path, job: dict, follow: bool) -> int:
    record.follow(run_dir / job["log"], (lambda: _running(job)) if follow else (lambda: False))
    return 0


def stop(run_dir: Path, job: dict) -> int:
    if not _running(job):
        print(f"rlc: the job of {run_dir} is not running", file=sys.stderr)
        return 0
    (run_dir / record.STOPPED).write_text(time.strftime("%Y-%m-%dT%H:%M:%S%z") + "\n")
    _stop_group(job["pid"], lambda: _running(job))
    print(f"rlc: stopped process group {job['pid']}", file=sys.stderr)
    return 0


def _stop_group(pgid: int, running: Callable[[], bool], grace_s: float = 20.0) -> None:
    """SIGINT first (the driver stops Ray cleanly), SIGTERM, then SIGKILL to whatever is left of the group."""
    for sig, wait_s in ((signal.SIGINT, grace_s), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait_s
        while running() and time.monotonic() < deadline:
            time.sleep(0.2)
        if not running():
            break
    with contextlib.suppress(ProcessLookupError):  # the leader is gone; its group's members may linger (raylets)
        os.killpg(pgid, signal.SIGKILL)


def _running(job: dict) -> bool:
    """The recorded leader is alive (same id, same start time) and not a zombie."""
    try:
        fields = Path(f"/proc/{job['pid']}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return False
    return fields[0] != "Z" and int(fields[19]) == job.get("start_ticks")


def _start_ticks(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None
