"""What a started job leaves in its run directory, so that `rlc status|logs|stop RUN_DIR` find it later.

`job.json` is written once, when the job has started: the executor and how to reach the job (a local process
group, a Ray submission at an address, a SLURM job id). It holds no secret: the Ray token stays where Ray reads it
(`$RAY_AUTH_TOKEN`, a token file). A local run's launcher adds `job.exit` when the job ends and `rlc stop` adds
`job.stopped`; separate files, so that neither write can undo the other.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rlc.diagnostics import CompileError, Diagnostic
from rlc.files import write_atomic

RECORD = "job.json"
EXIT = "job.exit"
STOPPED = "job.stopped"


def write(run_dir: Path, executor: str, **fields: Any) -> None:
    """A new job of this run directory (a first start or a --resume): what the last one left is cleared."""
    for leftover in (EXIT, STOPPED):
        (run_dir / leftover).unlink(missing_ok=True)
    record = {"executor": executor, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **fields}
    write_atomic(run_dir / RECORD, json.dumps(record, indent=2) + "\n")


def read(run_dir: Path) -> dict[str, Any]:
    path = run_dir / RECORD
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        hint = ("it was only rendered (--dry-run), or its launch failed before the job started"
                if (run_dir / "plan.json").exists() else "pass the run directory that `rlc launch` printed")
        raise CompileError([Diagnostic(f"{run_dir}: no job was started from this directory (no {RECORD})",
                                       hint=hint)]) from None
    except (OSError, ValueError) as err:
        raise CompileError([Diagnostic(f"cannot read {path}: {err}")]) from None
    if not isinstance(record, dict) or record.get("executor") not in ("local", "ray", "slurm"):
        raise CompileError([Diagnostic(f"{path} does not describe an rlc job")])
    return record


def announce(run_dir: Path, what: str) -> None:
    """Say what started and the commands that reach it from any shell."""
    quoted = _quote(str(run_dir))
    print(f"rlc: {what}\n  rlc status {quoted}\n  rlc logs {quoted} -f\n  rlc stop {quoted}", file=sys.stderr,
          flush=True)


def _quote(text: str) -> str:
    import shlex

    return shlex.quote(text)


def follow(path: Path, running: Callable[[], bool], poll_s: float = 0.5) -> None:
    """Copy `path` to stdout as it grows, until `running()` is false (then the rest). A file not there yet is
    waited for while the job runs."""
    offset = 0
    while True:
        alive = running()  # asked before reading, so that the last lines written before the end are not lost
        if path.exists():
            with path.open("rb") as f:
                f.seek(offset)
                chunk = f.read()
            offset += len(chunk)
            sys.stdout.buffer.write(chunk)
            sys.stdout.flush()
        if not alive:
            return
        time.sleep(poll_s)
