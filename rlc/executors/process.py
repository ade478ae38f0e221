"""Run a command in its own process group, stream its output, and take the whole group down on Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Sequence


def run_streaming(argv: Sequence[str], env: dict[str, str] | None = None, grace_s: float = 20.0) -> int:
    process = subprocess.Popen(list(argv), env=env, start_new_session=True)
    try:
        return process.wait()
    except KeyboardInterrupt:
        print("\nrlc: stopping (Ctrl-C again to kill)...", file=sys.stderr)
        stop_group(process, grace_s)
        return 130


def stop_group(process: subprocess.Popen, grace_s: float) -> None:
    """SIGINT first (the scripts' traps stop Ray cleanly), SIGTERM, then SIGKILL to whatever is left."""
    for sig, wait in ((signal.SIGINT, grace_s), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
            # The leader exited; members of its group may linger (Ray raylets): make sure none survive.
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        except (subprocess.TimeoutExpired, KeyboardInterrupt):
            continue
        return
