"""Hand the plan to SLURM: `sbatch` the rendered script when SLURM is here, else say how to."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from rlc.plan import LaunchPlan


def execute(plan: LaunchPlan, scripts: list[Path]) -> int:
    script = next(s for s in scripts if s.name == "sbatch.sh")
    if shutil.which("sbatch") is None:
        print(f"sbatch is not available on this machine; on the cluster, run:\n  sbatch {script}", file=sys.stderr)
        return 0
    return subprocess.run(["sbatch", str(script)], check=False).returncode
