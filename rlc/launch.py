"""`rlc launch`: flags -> overrides -> resolve -> plan -> (resume check, preflight) -> render -> execute.

Command-line flags become overrides on top of the file (`--nnodes 4` is `--set trainer.nnodes=4`), so there is one
way a value enters the config and `rlc show` explains it. Checkpoints default to the run directory, so that one
folder holds everything a run wrote and `--resume` finds it.

A run directory is a record (rlc.runrecord): `--resume` takes the flags it was launched with, and a resume whose
config or flags differ from the record is refused with the differences, key by key, unless `--force`; then the
old files move to `history/`. Nothing is written before every check passed (`compile_launch` writes nothing).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from rlc.diagnostics import CompileError, Diagnostic, dotted
from rlc.plan import Executor, LaunchPlan

DEFAULT_CHECKPOINT_DIR = "checkpoints/${trainer.project_name}/${trainer.experiment_name}"
RESUME_IGNORES = ("trainer.resume_mode",)  # --resume itself turns `disable` into `auto`


@dataclass
class LaunchRequest:
    config: Path
    sets: list[str] = field(default_factory=list)
    backend: str | None = None
    nnodes: int | None = None
    gpus_per_node: int | None = None
    executor: Executor | None = None  # None: local, or on --resume the run's own
    run_dir: Path | None = None
    resume: bool = False
    offline: bool = False
    force: bool = False  # launch even when the memory estimate says no, or resume a run whose launch changed
    dry_run: bool = False
    no_pin: bool = False  # accept Hub references that could not be pinned


@dataclass
class Compiled:
    """A launch ready to write: nothing of it is on disk yet."""

    request: LaunchRequest  # as it applies: on --resume, with the run's own flags where none were given
    plan: LaunchPlan
    config: Any  # RLCConfig
    tree: dict[str, Any]  # the resolved config as written (environment references kept)
    header: str
    private: bool  # the config holds a literal credential
    notes: list[Diagnostic]
    resume_changes: list[str] = field(default_factory=list)  # accepted with --force: the old files are archived
    rewrite: bool = True  # False: a resume with nothing changed keeps the run's files as they are


def flag_overrides(request: LaunchRequest) -> list[tuple[str, str]]:
    """Each flag the user gave, as (the flag as written, its override), so messages name the flag."""
    flags = {("--backend", "backend"): request.backend, ("--nnodes", "trainer.nnodes"): request.nnodes,
             ("--gpus-per-node", "trainer.n_gpus_per_node"): request.gpus_per_node}
    from rlc.overrides import format_value

    return [(f"{flag} {value}", f"{key}={format_value(value)}") for (flag, key), value in flags.items()
            if value is not None]


def prepare(request: LaunchRequest) -> tuple[LaunchPlan, list[Path], list[Diagnostic]]:
    """Compile and write the run directory; nothing is started (and nothing is checked by preflight)."""
    compiled = compile_launch(request)
    return compiled.plan, write_run(compiled), compiled.notes


def compile_launch(request: LaunchRequest) -> Compiled:
    """Everything up to a rendered run directory, in memory; raises CompileError on any refusal."""
    from rlc.loader import load_config
    from rlc.memory import UnknownShape, plan_memory, verdict
    from rlc.plan import make_plan, run_dir_name
    from rlc.resolve import resolve
    from rlc.secrets import holds_secrets, referenced_env

    loaded = None
    if request.run_dir is None:  # named after the experiment: the config says which
        loaded = load_config(request.config, request.sets, flag_overrides(request))
        request = replace(request, run_dir=_default_run_dir(loaded.config, request.resume, run_dir_name))
    run_dir = request.run_dir.resolve()
    _check_run_dir_name(run_dir)
    if request.resume and (filled := _with_record(request, run_dir)) != request:
        request, loaded = filled, None
    executor = request.executor or "local"
    loaded = loaded or load_config(request.config, request.sets, flag_overrides(request))
    resolved = resolve(loaded, offline=request.offline)
    config, trainer = resolved.config, resolved.config.trainer
    _place_paths(config, loaded, run_dir)
    before = None
    if request.resume:
        from rlc.rundiff import read_run_config

        before = read_run_config(run_dir)
        _keep_run_pins(config, before, resolved.unpinned)
        resolved.notes = [n for n in resolved.notes if not n.message.startswith("not pinned")
                          or dotted(n.path) in resolved.unpinned]
        if trainer.resume_mode == "disable":
            trainer.resume_mode = "auto"
    try:
        memory, no_estimate = plan_memory(config), None
    except UnknownShape as err:
        memory, no_estimate = None, str(err)
    if not request.dry_run and not request.force and (refusal := verdict(config, memory, "error")):
        raise CompileError(refusal)
    tree = resolved.tree()
    plan = make_plan(config, str(run_dir), executor, python=sys.executable, memory=memory,
                     unpinned=resolved.unpinned, referenced_env=tuple(referenced_env(tree)))
    if memory is None and trainer.device == "cuda":
        plan.notes.append(f"memory estimate skipped: {config.actor_rollout_ref.model.path}: " + (
            no_estimate or "no config.json on this machine (neither a local folder with one nor in the local "
                           "Hugging Face cache)"))
    header = resolved.header(f"Resolved by rlc from {request.config} at {time.strftime('%Y-%m-%d %H:%M:%S')}.")
    compiled = Compiled(replace(request, executor=executor), plan, config, tree, header, holds_secrets(tree),
                        loaded.warnings + resolved.notes)
    if before is not None:
        _compare_with_run(compiled, before, tree)
    else:
        _check_fresh(run_dir)
    return compiled


def write_run(compiled: Compiled) -> list[Path]:
    """Write the run directory: the resolved config, plan.json, the scripts and the launch record."""
    from rlc import runrecord
    from rlc.render import SCRIPTS, render_run_dir
    from rlc.resolve import dump_yaml

    plan, request = compiled.plan, compiled.request
    run_dir = Path(plan.run_dir)
    if not compiled.rewrite:
        if not request.dry_run:
            runrecord.mark_started(run_dir)
        return [run_dir / name for name in SCRIPTS[plan.executor]]
    if compiled.resume_changes:
        kept = runrecord.archive(run_dir)
        compiled.notes.append(Diagnostic(f"--force: the run's earlier launch files are kept in {kept}",
                                         severity="note"))
    resolved_yaml = dump_yaml(compiled.tree, compiled.header)
    scripts = render_run_dir(plan, resolved_yaml, python=sys.executable, private=compiled.private)
    runrecord.remove_stale_scripts(run_dir, scripts)
    record = runrecord.Record(str(request.config.resolve()), list(request.sets), request.backend, request.nnodes,
                              request.gpus_per_node, plan.executor, request.no_pin, request.dry_run)
    runrecord.write(run_dir, record, request.config, compiled.private)
    return scripts


def _place_paths(config: Any, loaded: Any, run_dir: Path) -> None:
    """Checkpoints into the run directory unless the config says otherwise; every local path absolute."""
    trainer = config.trainer
    if "default_local_dir" not in loaded.tree.get("trainer", {}):
        trainer.default_local_dir = str(run_dir / "checkpoints")
    else:
        trainer.default_local_dir = str(Path(trainer.default_local_dir).expanduser().resolve())
    absolute_local_paths(config)


def absolute_local_paths(config: object) -> None:
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
    sampler = config.data.sampler
    if sampler.class_path and not sampler.class_path.startswith("pkg://"):  # a file; pkg:// is imported by name
        sampler.class_path = fix(sampler.class_path.removeprefix("file://"))
    if config.slurm.template:
        config.slurm.template = str(Path(config.slurm.template).expanduser().resolve())
    turn = config.actor_rollout_ref.rollout.multi_turn
    turn.tool_config_path, turn.interaction_config_path = fix(turn.tool_config_path), fix(turn.interaction_config_path)


def _default_run_dir(config: Any, resume: bool, name: Any) -> Path:
    fresh = Path(name(config, time.strftime("%Y%m%d-%H%M%S")))
    if not resume:
        return fresh
    earlier = sorted(fresh.parent.glob(fresh.name.rsplit("-", 2)[0] + "-*"))
    if not earlier:
        raise CompileError([Diagnostic(f"--resume: no earlier run of this experiment under {fresh.parent}",
                                       hint="pass --run-dir DIR of the run to continue")])
    return earlier[-1]


def _check_run_dir_name(run_dir: Path) -> None:
    if any(ord(c) < 32 for c in str(run_dir)):
        raise CompileError([Diagnostic(f"the run directory {str(run_dir)!r} contains a control character",
                                       hint="choose a --run-dir without newlines or tabs")])


def _check_fresh(run_dir: Path) -> None:
    from rlc import runrecord

    if (reason := runrecord.check_fresh(run_dir)) is not None:
        raise CompileError([Diagnostic(reason, hint="pass --resume to continue it (or to start what a dry run "
                                                    "planned), or choose another --run-dir")])


def _with_record(request: LaunchRequest, run_dir: Path) -> LaunchRequest:
    """On --resume, the run's own flags wherever the user gave none (flags need not be repeated)."""
    from rlc import runrecord

    if not (run_dir / "config.resolved.yaml").exists():
        raise CompileError([Diagnostic(f"--resume: {run_dir} holds no run (no config.resolved.yaml)",
                                       hint="launch it without --resume first, or pass the right --run-dir")])
    record = runrecord.read(run_dir)
    if record is None:  # a run directory from before launch records: its flags are unknown, only compared
        return request
    return replace(request, sets=request.sets or record.sets,
                   backend=request.backend or record.backend, nnodes=request.nnodes or record.nnodes,
                   gpus_per_node=request.gpus_per_node or record.gpus_per_node,
                   executor=request.executor or record.executor,  # type: ignore[arg-type]
                   no_pin=request.no_pin or record.no_pin)


def _keep_run_pins(config: Any, before: dict[str, Any], unpinned: dict[str, str]) -> None:
    """A resumed run stays on the commits it was pinned to, though a branch moved since or the Hub is out of
    reach: the same model path keeps its sha from the run's config."""
    from rlc.resolve import FULL_SHA

    model, critic = config.actor_rollout_ref.model, config.critic.model
    old_model = before.get("actor_rollout_ref", {}).get("model", {})
    old_critic = before.get("critic", {}).get("model", {})
    places = [(model, "path", "revision", old_model, "actor_rollout_ref.model"),
              (model, "tokenizer_path", "tokenizer_revision", old_model, "actor_rollout_ref.model"),
              (critic, "path", "revision", old_critic, "critic.model")]
    for block, path_key, revision_key, old, where in places:
        sha = old.get(revision_key)
        if old.get(path_key) == getattr(block, path_key) and isinstance(sha, str) and FULL_SHA.fullmatch(sha):
            setattr(block, revision_key, sha)
            if revision_key == "revision":
                block.revision_requested = old.get("revision_requested")
            unpinned.pop(f"{where}.{revision_key}", None)
    for dataset_id, sha in before.get("data", {}).get("revisions", {}).items():
        if f"data.revisions.{dataset_id}" in unpinned or dataset_id in config.data.revisions:
            config.data.revisions[dataset_id] = sha
            unpinned.pop(f"data.revisions.{dataset_id}", None)


def _compare_with_run(compiled: Compiled, before: dict[str, Any], tree: dict[str, Any]) -> None:
    """A resume continues the same run: a changed config or executor is refused with the differences."""
    from rlc import rundiff, runrecord

    run_dir = Path(compiled.plan.run_dir)
    record = runrecord.read(run_dir)
    lines = [change.line() for change in rundiff.changes(before, tree, ignore=RESUME_IGNORES)]
    if record is not None and record.executor != compiled.plan.executor:  # the config does not hold it
        lines.insert(0, f"~ --executor: {record.executor} -> {compiled.plan.executor}")
    if not lines:
        # Unchanged: keep the run's files, unless --resume had to switch resume_mode on.
        compiled.rewrite = before.get("trainer", {}).get("resume_mode") != tree["trainer"]["resume_mode"]
        return
    if not compiled.request.force:
        started = f" (launched as: {record.command()})" if record else ""
        raise CompileError([Diagnostic(
            f"--resume: this launch differs from the run in {run_dir}{started}:\n  " + "\n  ".join(lines),
            hint="resume without changing flags or the config (--resume reuses the run's flags), start a new run "
                 "in another --run-dir, or pass --force to continue with these changes (the old launch files "
                 "move to history/)")])
    compiled.resume_changes = lines
    compiled.notes.append(Diagnostic("--force: resuming with changes:\n  " + "\n  ".join(lines),
                                     severity="warning"))


def execute(plan: LaunchPlan, scripts: list[Path]) -> int:
    from rlc import executors

    return executors.get(plan.executor)(plan, scripts)
