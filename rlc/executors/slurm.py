"""Hand the plan to SLURM with `sbatch --parsable`, record the job id; status from squeue/sacct, stop with scancel.

Nothing submitted is an error (exit 1): no `sbatch` here, or sbatch refusing the script, says so with the script
to submit by hand.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from rlc.executors import record
from rlc.executors.ray import require_token
from rlc.plan import LaunchPlan

ACTIVE = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "RESIZING", "SUSPENDED"}


def execute(plan: LaunchPlan, scripts: list[Path]) -> int:
    script = next(s for s in scripts if s.name == "sbatch.sh")
    require_token(plan)  # the nodes start Ray with the submitting environment (or a shared home)'s token
    if shutil.which("sbatch") is None:
        print(f"rlc: nothing submitted: sbatch is not on PATH here; on a SLURM login node, run:\n  sbatch {script}",
              file=sys.stderr)
        return 1
    result = subprocess.run(["sbatch", "--parsable", str(script)], capture_output=True, text=True, check=False)
    sys.stderr.write(result.stderr)
    # --parsable prints "JOBID" or "JOBID;CLUSTER"
    found = re.fullmatch(r"(\d+)(?:;(\S+))?", result.stdout.strip())
    if result.returncode != 0 or not found:
        print(f"rlc: nothing submitted: sbatch exited {result.returncode} and printed {result.stdout.strip()!r}",
              file=sys.stderr)
        return result.returncode or 1
    job_id, cluster = found.groups()
    run_dir = Path(plan.run_dir)
    record.write(run_dir, "slurm", job_id=job_id, cluster=cluster, log=f"slurm-{job_id}.out")
    record.announce(run_dir, f"submitted SLURM job {job_id}")
    return 0


def status(run_dir: Path, job: dict) -> tuple[str, int]:
    state = _state(job)
    good = state in ACTIVE or state == "COMPLETED"
    return f"{state} (SLURM job {job['job_id']})", 0 if good else 1


def logs(run_dir: Path, job: dict, follow: bool) -> int:
    record.follow(run_dir / job["log"], (lambda: _state(job) in ACTIVE) if follow else (lambda: False), poll_s=2.0)
    return 0


def stop(run_dir: Path, job: dict) -> int:
    return subprocess.run(["scancel", *_cluster(job), job["job_id"]], check=False).returncode


def _state(job: dict) -> str:
    """squeue while the job is queued or running; sacct after (squeue forgets finished jobs within minutes)."""
    queued = _ask(["squeue", "--noheader", *_cluster(job), "--jobs", job["job_id"], "--format=%T"])
    if queued:
        return queued
    accounted = _ask(["sacct", "--noheader", "--allocations", "--parsable2", *_cluster(job), "--jobs",
                      job["job_id"], "--format=State"])
    return accounted.split()[0] if accounted else "UNKNOWN (neither squeue nor sacct knows the job)"


def _ask(argv: list[str]) -> str:
    if shutil.which(argv[0]) is None:
        return ""
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    return result.stdout.strip().splitlines()[0].strip() if result.returncode == 0 and result.stdout.strip() else ""


def _cluster(job: dict) -> list[str]:
    return [f"--clusters={job['cluster']}"] if job.get("cluster") else []
