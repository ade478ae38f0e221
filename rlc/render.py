"""plan -> run directory: the resolved config, plan.json and the executor's scripts, from Jinja2 templates.

Templates use StrictUndefined (a typo in a template is an error, not an empty string) and every value that reaches
a shell goes through the `q` filter (shlex.quote), so a config value can never become shell code.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

from rlc.files import write_atomic
from rlc.plan import LaunchPlan
from rlc.resources import resource_dir

SCRIPTS = {
    "local": ["launch_local.sh"],
    "ray": ["ray_head.sh", "ray_worker.sh", "submit_ray.sh"],
    "slurm": ["ray_head.sh", "ray_worker.sh", "sbatch.sh"],
}


def environment() -> Any:
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(resource_dir("templates")),
                             undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True)
    env.filters["q"] = lambda value: shlex.quote(str(value))
    env.filters["comment"] = lambda value: re.sub(r"[\r\n]+", " ", str(value))
    env.filters["envname"] = _env_name
    return env


def _env_name(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise ValueError(f"not an environment variable name: {name!r}")
    return name


def render_run_dir(plan: LaunchPlan, resolved_yaml: str, python: str, private: bool = False) -> list[Path]:
    """Write everything the executor needs into plan.run_dir; returns the scripts written. `private`: the config
    holds a literal credential (the user wrote one into the YAML), so only its owner may read it."""
    run_dir = Path(plan.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(run_dir / "config.resolved.yaml", resolved_yaml, mode=0o600 if private else 0o644)
    write_atomic(run_dir / "plan.json", json.dumps(plan.to_json(), indent=2) + "\n")
    write_atomic(run_dir / "runtime_env.json", json.dumps({"env_vars": plan.env}, indent=2) + "\n")
    env = environment()
    context = {"plan": plan, "python": python, "submission_id": _submission_id(plan),
               "job_name": re.sub(r"[^A-Za-z0-9._-]+", "_", plan.name)}
    written = []
    for name in SCRIPTS[plan.executor]:
        path = run_dir / name
        write_atomic(path, env.get_template(f"{name}.j2").render(context), mode=0o755)
        written.append(path)
    return written


def _submission_id(plan: LaunchPlan) -> str:
    return "rlc-" + re.sub(r"[^A-Za-z0-9-]+", "-", Path(plan.run_dir).name).strip("-")[:60]
