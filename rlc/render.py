"""plan -> run directory: the resolved config, plan.json and the executor's scripts, from Jinja2 templates.

Templates use StrictUndefined (a typo in a template is an error, not an empty string) and every value that reaches
a shell goes through the `q` filter (shlex.quote), so a config value can never become shell code. `#SBATCH` lines
are read by sbatch, not by a shell, so their values go through `sbatch` instead (sbatch's own quoting, and `%`
doubled where Slurm reads file name patterns). Comments flatten every control character, and a NUL, which no shell
string can hold, is refused with a message rather than written into a script that would not run.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

from rlc.diagnostics import CompileError, Diagnostic
from rlc.files import write_atomic
from rlc.plan import LaunchPlan
from rlc.resources import resource_dir

SCRIPTS = {
    "local": ["launch_local.sh"],
    "ray": ["ray_head.sh", "ray_worker.sh", "ray_job.sh", "submit_ray.sh"],
    "slurm": ["ray_head.sh", "ray_worker.sh", "sbatch.sh"],
}


def environment() -> Any:
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(resource_dir("templates")),
                             undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True)
    env.filters["q"] = lambda value: shlex.quote(_no_nul(str(value)))
    env.filters["comment"] = lambda value: re.sub(r"[\x00-\x1f\x7f]+", " ", str(value))
    env.filters["envname"] = _env_name
    env.filters["sbatch"] = _sbatch_word
    env.filters["slurm_pattern"] = _slurm_pattern
    return env


def _no_nul(value: str) -> str:
    if "\0" in value:
        raise CompileError([Diagnostic(f"{value!r} contains a NUL character, which no shell script can hold",
                                       hint="remove it from the config or the command line")])
    return value


def _sbatch_word(value: object) -> str:
    """One argument of an `#SBATCH` line. sbatch splits these lines itself: quotes group, a backslash escapes the
    next character (inside quotes too), an unquoted `#` starts a comment, and `$` or backquotes mean nothing. So:
    double quotes, with `\\` and `"` escaped."""
    text = _no_nul(str(value))
    if any(ord(c) < 32 for c in text):
        raise CompileError([Diagnostic(f"{text!r} contains a control character, which an #SBATCH line cannot hold")])
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _slurm_pattern(path: object) -> str:
    """A literal path inside a Slurm file name pattern: `%` is doubled (else `%j` in a directory name would become
    the job id). A name with a backslash is not read as a pattern at all (sbatch(1), "filename pattern")."""
    text = str(path)
    return text if "\\" in text else text.replace("%", "%%")


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
    if plan.executor == "slurm" and plan.slurm.get("container_image"):
        python = plan.slurm["container_python"]  # the driver and Ray run inside the image
    context = {"plan": plan, "python": python, "submission_id": submission_id(plan), "slurm": plan.slurm,
               "job_name": re.sub(r"[^A-Za-z0-9._-]+", "_", plan.name)}
    written = []
    for name in SCRIPTS[plan.executor]:
        path = run_dir / name
        write_atomic(path, _render(env, name, plan, context), mode=0o755)
        written.append(path)
    return written


def _render(env: Any, name: str, plan: LaunchPlan, context: dict[str, Any]) -> str:
    """rlc's template of `name`, or for sbatch.sh the user's own (`slurm.template`), which may include rlc's
    `_common.sh.j2` and `_wait_ray.sh.j2`."""
    user = plan.slurm.get("template")
    if name != "sbatch.sh" or not user:
        return env.get_template(f"{name}.j2").render(context)
    import jinja2

    try:
        return env.from_string(Path(user).read_text()).render(context)
    except (OSError, UnicodeDecodeError) as err:
        problem = f"cannot read the sbatch template {user}: {err}"
    except jinja2.TemplateSyntaxError as err:
        problem = f"{user}:{err.lineno}: {err.message}"
    except jinja2.TemplateError as err:  # an undefined name, a missing include
        problem = f"{user}: {err}"
    raise CompileError([Diagnostic(problem, ("slurm", "template"))])


def submission_id(plan: LaunchPlan) -> str:
    return "rlc-" + re.sub(r"[^A-Za-z0-9-]+", "-", Path(plan.run_dir).name).strip("-")[:60]
