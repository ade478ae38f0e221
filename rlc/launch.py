"""`rlc launch`: flags -> overrides -> resolve -> plan -> render -> execute.

Command-line flags become overrides on top of the file (`--nnodes 4` is `--set trainer.nnodes=4`), so there is one
way a value enters the config and `rlc show` explains it. Checkpoints default to the run directory, so that one
folder holds everything a run wrote and `--resume` finds it.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from rlc.diagnostics import CompileError, Diagnostic
from rlc.plan import Executor, LaunchPlan

DEFAULT_CHECKPOINT_DIR = "checkpoints/${trainer.project_name}/${trainer.experiment_name}"


@dataclass
class LaunchRequest:
    config: Path
    sets: list[str] = field(default_factory=list)
    backend: str | None = None
    nnodes: int | None = None
    gpus_per_node: int | None = None
    executor: Executor = "local"
    run_dir: Path | None = None
    resume: bool = False
    offline: bool = False
    force: bool = False  # launch even when the memory estimate says the run will not fit
    dry_run: bool = False


def flag_overrides(request: LaunchRequest) -> list[tuple[str, str]]:
    """Each flag the user gave, as (the flag as written, its override), so messages name the flag."""
    flags = {("--backend", "backend"): request.backend, ("--nnodes", "trainer.nnodes"): request.nnodes,
             ("--gpus-per-node", "trainer.n_gpus_per_node"): request.gpus_per_node}
    from rlc.overrides import format_value

    return [(f"{flag} {value}", f"{key}={format_value(value)}") for (flag, key), value in flags.items()
            if value is not None]


def prepare(request: LaunchRequest) -> tuple[LaunchPlan, list[Path], list[Diagnostic]]:
    """Everything up to a rendered run directory; nothing is started."""
    from rlc.loader import load_config
    from rlc.memory import plan_memory, verdict
    from rlc.plan import make_plan, run_dir_name
    from rlc.render import render_run_dir
    from rlc.resolve import dump_yaml, resolve
    from rlc.secrets import holds_secrets

    loaded = load_config(request.config, request.sets, flag_overrides(request))
    resolved = resolve(loaded, offline=request.offline)
    config = resolved.config
    run_dir = (request.run_dir or _default_run_dir(config, request.resume, run_dir_name)).resolve()
    _check_run_dir(run_dir, request.resume)
    trainer = config.trainer
    if "default_local_dir" not in loaded.tree.get("trainer", {}):
        trainer.default_local_dir = str(run_dir / "checkpoints")
    else:
        trainer.default_local_dir = str(Path(trainer.default_local_dir).expanduser().resolve())
    _absolute_local_paths(config)
    if request.resume and trainer.resume_mode == "disable":
        trainer.resume_mode = "auto"
    memory = plan_memory(config)
    if not request.dry_run and not request.force and (refusal := verdict(config, memory, "error")):
        raise CompileError(refusal)
    plan = make_plan(config, str(run_dir), request.executor, python=sys.executable, memory=memory)
    header = f"Resolved by rlc from {request.config} at {time.strftime('%Y-%m-%d %H:%M:%S')}."
    tree = resolved.tree()
    scripts = render_run_dir(plan, dump_yaml(tree, header), python=sys.executable, private=holds_secrets(tree))
    return plan, scripts, loaded.warnings + resolved.notes


def _absolute_local_paths(config: object) -> None:
    """Relative paths mean the launch directory; the runtime's workers run elsewhere, so spell them out."""
    from rlc.hub import is_local_path

    def fix(value: str | None) -> str | None:
        return str(Path(value).expanduser().resolve()) if value and is_local_path(value) else value

    model = config.actor_rollout_ref.model
    model.path, model.tokenizer_path = fix(model.path), fix(model.tokenizer_path)
    config.critic.model.path = fix(config.critic.model.path)
    data = config.data
    for key in ("train_files", "val_files"):
        value = getattr(data, key)
        setattr(data, key, [fix(v) for v in value] if isinstance(value, list) else fix(value))
    if config.custom_reward_function.path:
        config.custom_reward_function.path = fix(config.custom_reward_function.path)
    turn = config.actor_rollout_ref.rollout.multi_turn
    turn.tool_config_path, turn.interaction_config_path = fix(turn.tool_config_path), fix(turn.interaction_config_path)


def _default_run_dir(config: object, resume: bool, name: object) -> Path:
    fresh = Path(name(config, time.strftime("%Y%m%d-%H%M%S")))
    if not resume:
        return fresh
    earlier = sorted(fresh.parent.glob(fresh.name.rsplit("-", 2)[0] + "-*"))
    if not earlier:
        raise CompileError([Diagnostic(f"--resume: no earlier run of this experiment under {fresh.parent}",
                                       hint="pass --run-dir DIR of the run to continue")])
    return earlier[-1]


def _check_run_dir(run_dir: Path, resume: bool) -> None:
    if any(ord(c) < 32 for c in str(run_dir)):
        raise CompileError([Diagnostic(f"the run directory {str(run_dir)!r} contains a control character",
                                       hint="choose a --run-dir without newlines or tabs")])
    if not resume and (run_dir / "config.resolved.yaml").exists():
        raise CompileError([Diagnostic(f"{run_dir} already holds a run",
                                       hint="pass --resume to continue it, or choose another --run-dir")])


def execute(plan: LaunchPlan, scripts: list[Path]) -> int:
    from rlc import executors

    return executors.get(plan.executor)(plan, scripts)
