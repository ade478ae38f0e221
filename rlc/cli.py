"""The `rlc` command: thin wrappers that call one stage each and print diagnostics.

Heavy modules are imported inside the commands, so `rlc validate` pays only for what it uses; the program's entry
point (`rlc.entry`) runs a plain `rlc validate` without importing typer at all.
"""

from __future__ import annotations

import sys

if __name__ == "__main__":  # `python -m rlc.cli validate ...`: the same quick path as the `rlc` program's
    from rlc.entry import quick_validate

    quick_validate(sys.argv[1:])

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from rlc.diagnostics import CompileError, Diagnostic, render

if TYPE_CHECKING:
    from rlc.launch import Compiled

# rich_markup_mode=None: plain help text, so `rlc --help` does not import rich and markdown-it (most of its time)
app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
                  help="Compile, check and launch RL post-training jobs (GRPO, PPO) from one YAML file.")


def _complete_set(incomplete: str) -> list[str]:
    from rlc.completion import complete_set

    return complete_set(incomplete)


def _complete_key(incomplete: str) -> list[str]:
    from rlc.completion import complete_key

    return complete_key(incomplete)


def _print_version(value: bool) -> None:
    if value:
        from rlc import __version__

        typer.echo(f"rlc {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                                help="Print rlc's version and exit")] = False) -> None:
    """Compile, check and launch RL post-training jobs (GRPO, PPO) from one YAML file."""

def _check_sets(values: list[str] | None) -> list[str] | None:
    """`-s key value` makes `value` a separate argument (often read as a file): say so at the flag."""
    for text in values or []:
        if "=" not in text and not text.startswith("~"):
            raise typer.BadParameter(f"`{text}` is not key=value; write `-s {text}=VALUE` (with `=`, no space), or "
                                     f"`-s ~{text}` to delete the key", param_hint="--set")
    return values


SetOption = Annotated[list[str] | None, typer.Option("--set", "-s", help="Override a key: a.b.c=value",
                                                     callback=_check_sets, autocompletion=_complete_set)]


@contextmanager
def reporting() -> Iterator[None]:
    """A stage's CompileError becomes its diagnostics on stderr and exit code 1."""
    try:
        yield
    except CompileError as err:
        _print(err.diagnostics)
        raise typer.Exit(1) from None


def _print(diagnostics: list[Diagnostic], fmt: str = "text") -> None:
    if diagnostics:
        typer.echo(render(diagnostics, fmt), err=fmt == "text")


@app.command()
def validate(
    files: Annotated[list[Path], typer.Argument(help="Config files to check")],
    set_: SetOption = None,
    format: Annotated[str, typer.Option("--format", help="text or json")] = "text",
) -> None:
    """Check configs against the schema and the cross-field rules; exit 1 listing every problem."""
    from rlc.loader import load_config

    if format not in ("text", "json"):
        raise typer.BadParameter("--format is text or json")
    everything: list[Diagnostic] = []
    failed = False
    for file in files:
        try:
            everything += load_config(file, set_ or []).warnings
        except CompileError as err:
            everything += err.diagnostics
            failed = True
    _print(everything, format)
    if format == "text":
        typer.echo(f"{'invalid' if failed else 'valid'}: {len(files)} file(s), "
                   f"{sum(d.severity == 'error' for d in everything)} error(s), "
                   f"{sum(d.severity == 'warning' for d in everything)} warning(s)", err=failed)
    raise typer.Exit(1 if failed else 0)


OfflineOption = Annotated[bool, typer.Option("--offline", help="Resolve Hub refs from the local cache only")]


@app.command("resolve")
def resolve_cmd(
    file: Annotated[Path, typer.Argument(help="Config file")],
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Write here instead of stdout")] = None,
    set_: SetOption = None,
    offline: OfflineOption = False,
) -> None:
    """Write the fully resolved config: defaults explicit, Hub revisions pinned to commit shas. Environment
    references stay references; on the terminal, literal credentials are redacted."""
    from rlc.loader import load_config
    from rlc.resolve import dump_yaml, resolve
    from rlc.secrets import holds_secrets, redact

    with reporting():
        loaded = load_config(file, set_ or [])
        resolved = resolve(loaded, offline=offline)
    _print(loaded.warnings + resolved.notes)
    tree, header = resolved.tree(), resolved.header(f"Resolved by rlc from {file}. Every value is explicit.")
    if output:
        from rlc.files import write_atomic

        write_atomic(output, dump_yaml(tree, header), mode=0o600 if holds_secrets(tree) else 0o644)
        typer.echo(f"wrote {output}", err=True)
    else:
        sys.stdout.write(dump_yaml(redact(tree), header))


@app.command()
def show(
    file: Annotated[Path, typer.Argument(help="Config file")],
    explain: Annotated[str | None, typer.Option("--explain", help="A key (or a section) to explain",
                                                autocompletion=_complete_key)] = None,
    set_: SetOption = None,
    offline: OfflineOption = False,
) -> None:
    """Show each resolved value and where it came from: file:line, --set, a default, or the Hub."""
    from rlc.loader import load_config
    from rlc.resolve import resolve
    from rlc.secrets import redact

    with reporting():
        resolved = resolve(load_config(file, set_ or []), offline=offline)
    values = _flatten(redact(resolved.tree()))
    keys = [k for k in resolved.provenance if explain is None or k == explain or k.startswith(explain + ".")]
    if not keys:
        typer.echo(f"error: no key `{explain}` in the config", err=True)
        raise typer.Exit(1)
    width = max(len(k) for k in keys)
    meanings = _meanings() if explain is not None else {}
    for key in keys:
        typer.echo(f"{key:<{width}}  {values.get(key)!r:<30}  # {resolved.provenance[key]}")
        if key in meanings:
            typer.echo(f"{'':<{width}}  {meanings[key]}")


def _meanings() -> dict[str, str]:
    """Each key's description and status, as the key table states them."""
    from rlc import keytable, schema

    return {row.key: f"[{row.status}] {row.text}" for row in keytable.rows(schema.load())}


@app.command("explain")
def explain_cmd(
    key: Annotated[str, typer.Argument(help="A dotted config key, e.g. actor_rollout_ref.rollout.name",
                                       autocompletion=_complete_key)],
) -> None:
    """Say what a config key means: its description, default, status in rlc and the values it takes."""
    from rlc.completion import describe

    found = describe(key)
    if found is None:
        _no_such_key(key)
    typer.echo(f"{found['key']}  [{found['status']}]")
    if found["status"] != "section":
        typer.echo(f"  default: {found['default']!r}")
    if found["values"]:
        typer.echo(f"  values:  {', '.join(found['values'])}")
    if found["text"]:
        typer.echo(f"  {found['text']}")


def _no_such_key(key: str) -> None:
    import difflib

    from rlc.completion import all_keys

    # compare as many trailing parts as were typed, so that `rollout.nme` finds `actor_rollout_ref.rollout.name`
    parts = key.count(".") + 1
    tails: dict[str, list[str]] = {}
    for known in all_keys():
        tails.setdefault(".".join(known.split(".")[-parts:]), []).append(known)
    close = [k for tail in difflib.get_close_matches(key, tails, n=3, cutoff=0.8) for k in tails[tail]][:5]
    hint = f"; did you mean {', '.join(f'`{k}`' for k in close)}?" if close else "; see `rlc keys`"
    typer.echo(f"error: `{key}` is not a config key{hint}", err=True)
    raise typer.Exit(1)


def _flatten(node: object, prefix: str = "") -> dict[str, object]:
    if isinstance(node, dict) and node:
        return {k: v for key, value in node.items()
                for k, v in _flatten(value, f"{prefix}.{key}" if prefix else key).items()}
    return {prefix: node}


@app.command()
def launch(
    file: Annotated[Path, typer.Argument(help="Config file")],
    backend: Annotated[str | None, typer.Option(help="fsdp or megatron (overrides the file)")] = None,
    nnodes: Annotated[int | None, typer.Option(help="Number of nodes (trainer.nnodes)")] = None,
    gpus_per_node: Annotated[int | None, typer.Option(help="GPUs per node (trainer.n_gpus_per_node)")] = None,
    executor: Annotated[str | None, typer.Option(help="local, ray or slurm (default local; on --resume the run's)")]
    = None,
    run_dir: Annotated[Path | None, typer.Option(help="Run directory (default runs/PROJECT/EXPERIMENT-TIME)")] = None,
    set_: SetOption = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Write the run directory, print the plan, start nothing")]
    = False,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --run-dir from its last checkpoint, "
                                         "with the flags it was launched with")] = False,
    offline: OfflineOption = False,
    force: Annotated[bool, typer.Option("--force", help="Launch even if the memory estimate exceeds the GPU; resume "
                                        "even if the config or flags changed")] = False,
    no_pin: Annotated[bool, typer.Option("--no-pin", help="Launch even if a Hub reference cannot be pinned to a "
                                         "commit (the Hub out of reach)")] = False,
    preflight: Annotated[bool, typer.Option("--preflight", help="With --dry-run: also run the checks a launch runs "
                                            "before starting (paths, data columns, tokens, loggers, GPUs)")]
    = False,
) -> None:
    """Resolve, plan, check, render and start a training run."""
    from rlc.launch import LaunchRequest, compile_launch, execute, write_run
    from rlc.plan import summary

    if executor not in (None, "local", "ray", "slurm"):
        raise typer.BadParameter("--executor is local, ray or slurm")
    request = LaunchRequest(file, set_ or [], backend, nnodes, gpus_per_node, executor,  # type: ignore[arg-type]
                            run_dir, resume, offline, force, dry_run, no_pin)
    with reporting():
        compiled = compile_launch(request)
    _print(compiled.notes)
    typer.echo(summary(compiled.plan), err=True)
    if not dry_run or preflight:
        _preflight(compiled)
    with reporting():
        scripts = write_run(compiled)
    if dry_run:
        done = "wrote" if compiled.rewrite else "kept (the run is unchanged)"
        typer.echo(f"dry run: {done} " + ", ".join(str(p) for p in [Path(compiled.plan.run_dir) / "plan.json",
                                                                   *scripts]), err=True)
        return
    with reporting():
        code = execute(compiled.plan, scripts)
    raise typer.Exit(code)


def _preflight(compiled: Compiled) -> None:
    """rlc.preflight's checks; any error stops the launch before anything is written or started."""
    from rlc.diagnostics import has_errors
    from rlc.preflight import run_checks

    found = run_checks(compiled.config, compiled.plan, compiled.request.no_pin)
    _print(found)
    if has_errors(found):
        typer.echo(f"preflight: {sum(d.severity == 'error' for d in found)} problem(s); nothing was started",
                   err=True)
        raise typer.Exit(1)
    typer.echo("preflight: ok", err=True)


@app.command("diff")
def diff_cmd(
    first: Annotated[Path, typer.Argument(help="A config file or a run directory")],
    second: Annotated[Path, typer.Argument(help="A config file or a run directory")],
    set_: SetOption = None,
    offline: OfflineOption = False,
) -> None:
    """Compare two configs or run directories, resolved, key by key; exit 0 if equal, 1 if they differ, 2 on an
    error. --set applies to both sides that are config files."""
    from rlc.rundiff import changes, load_side

    try:
        before, after = (load_side(side, set_ or [], offline) for side in (first, second))
    except CompileError as err:
        _print(err.diagnostics)
        raise typer.Exit(2) from None
    found = changes(before, after)
    for change in found:
        typer.echo(change.line())
    typer.echo(f"{len(found)} key(s) differ between {first} and {second}" if found
               else f"{first} and {second} are the same, key by key", err=True)
    raise typer.Exit(1 if found else 0)


RunDirArgument = Annotated[Path, typer.Argument(help="The run directory that `rlc launch` printed")]


def _job(run_dir: Path) -> tuple[object, dict]:
    """The executor module and the record of the job started from `run_dir`."""
    from rlc import executors
    from rlc.executors import record

    with reporting():
        job = record.read(run_dir)
    return executors.module(job["executor"]), job


@app.command()
def status(run_dir: RunDirArgument) -> None:
    """Say whether the job of a run directory is pending, running, succeeded, failed or stopped (exit 0 while it
    runs or after it succeeded)."""
    executor, job = _job(run_dir)
    with reporting():
        text, code = executor.status(run_dir, job)  # type: ignore[attr-defined]
    typer.echo(f"{run_dir}: {job['executor']} job {text}")
    raise typer.Exit(code)


@app.command()
def logs(
    run_dir: RunDirArgument,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing until the job ends")] = False,
) -> None:
    """Print the output of the job of a run directory."""
    executor, job = _job(run_dir)
    with reporting():
        raise typer.Exit(executor.logs(run_dir, job, follow))  # type: ignore[attr-defined]


@app.command()
def stop(run_dir: RunDirArgument) -> None:
    """Stop the job of a run directory (local: its process group; Ray: `ray job stop`; SLURM: `scancel`)."""
    executor, job = _job(run_dir)
    with reporting():
        raise typer.Exit(executor.stop(run_dir, job))  # type: ignore[attr-defined]


@app.command()
def upload(
    checkpoint_dir: Annotated[Path, typer.Argument(help="An HF folder, or rlc/verl sharded checkpoint (actor) dir")],
    repo_id: Annotated[str, typer.Option("--repo-id", help="Repo name, or owner/name")],
    organization: Annotated[str | None, typer.Option(help="Upload under this organization")] = None,
    private: Annotated[bool, typer.Option("--private", help="Create the repo as private")] = False,
    optimizer: Annotated[str, typer.Option(help="full: include optimizer.pt; none: the model alone")] = "full",
    base_model: Annotated[str | None, typer.Option(help="Config/tokenizer source when the checkpoint has none")]
    = None,
    max_retries: Annotated[int, typer.Option(help="Retries of transient failures")] = 3,
) -> None:
    """Consolidate a checkpoint into Hugging Face format and upload it to the Hub."""
    from rlc.files import write_atomic
    from rlc.upload import UploadError, UploadTarget, card_for, prepare_folder, upload_folder

    if optimizer not in ("full", "none"):
        raise typer.BadParameter("--optimizer is full or none")
    target = UploadTarget.of(repo_id, organization, private)
    try:
        folder = prepare_folder(checkpoint_dir, base_model, optimizer == "full")
        if not (folder / "README.md").exists():
            write_atomic(folder / "README.md", card_for(folder, target.repo_id, base_model, optimizer == "full"))
        url = upload_folder(folder, target, include_optimizer=optimizer == "full", max_retries=max_retries)
    except UploadError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"uploaded {folder} -> {url}")


@app.command()
def convert(
    from_cli: Annotated[str | None, typer.Option("--from-cli", help="A verl command line ('-' reads stdin)")] = None,
    from_file: Annotated[Path | None, typer.Option("--from-file", help="A shell script that runs verl")] = None,
    to_cli: Annotated[Path | None, typer.Option("--to-cli", help="A YAML config to print as overrides")] = None,
    into: Annotated[Path | None, typer.Option("--into", help="Merge into this YAML file (edited in place, comments "
                                              "kept; with -o the result goes there instead)")] = None,
    fix: Annotated[Path | None, typer.Option("--fix", help="Move keys written in the wrong section of this YAML "
                                             "file to where verl reads them (edited in place, comments kept)")]
    = None,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Write here instead of stdout")] = None,
    expand_env: Annotated[bool, typer.Option("--expand-env", help="Expand $VAR from the environment; by default "
                                             "they become ${oc.env:VAR} references, resolved at launch")] = False,
    allow_unknown: Annotated[bool, typer.Option("--allow-unknown", help="Keep keys rlc does not know")] = False,
) -> None:
    """Convert a legacy verl command line to YAML, a YAML config to a command line, or fix a YAML in place."""
    from rlc import convert as conv
    from rlc.files import write_atomic

    if sum(x is not None for x in (from_cli, from_file, to_cli, fix)) != 1:
        raise typer.BadParameter("give exactly one of --from-cli, --from-file, --to-cli, --fix")
    if fix is not None:
        _fix(fix, output)
        return
    if into is not None and output is None:
        output = into
    with reporting():
        if to_cli is not None:
            from rlc.source import load_file

            text = conv.to_cli(load_file(to_cli).data)
        else:
            raw = sys.stdin.read() if from_cli == "-" else from_cli if from_cli is not None else _read(from_file)
            command = conv.read_command(raw, str(from_file) if from_file else None)
            for note in command.notes:
                typer.echo(f"note: {note}", err=True)
            if command.launch is not None:
                text = command.launch
            elif into is not None and command.base:
                raise CompileError([Diagnostic("the script's `--config-name` names a config of its own, which is the "
                                               "base of the conversion; --into would take a second base: convert "
                                               "without --into")])
            elif into is not None:
                text = conv.merge_into(into, command.texts, expand_env=expand_env, allow_unknown=allow_unknown)
            else:
                text = conv.to_yaml(conv.from_overrides(command.texts, base=command.base, expand_env=expand_env,
                                                        allow_unknown=allow_unknown))
    if output:
        write_atomic(output, text)
        typer.echo(f"wrote {output}", err=True)
    else:
        sys.stdout.write(text)


def _fix(file: Path, output: Path | None) -> None:
    from rlc.convert import fix_misplaced
    from rlc.files import write_atomic

    with reporting():
        text, moved, left = fix_misplaced(file)
    for line in moved + left:
        typer.echo(line, err=True)
    if not moved:
        typer.echo(f"{file}: nothing to move", err=True)
        return
    target = output or file
    write_atomic(target, text, mode=target.stat().st_mode & 0o7777 if target.exists() else 0o644)
    typer.echo(f"wrote {target}", err=True)


def _read(path: Path | None) -> str:
    try:
        return path.read_text() if path else ""
    except (OSError, UnicodeDecodeError) as err:
        raise CompileError([Diagnostic(f"cannot read {path}: {err}")]) from None


@app.command("reward-server")
def reward_server(
    host: Annotated[str, typer.Option(help="Address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on")] = 8000,
    workers: Annotated[int, typer.Option(help="Server processes")] = 1,
    judge_url: Annotated[str | None, typer.Option(help="An OpenAI-compatible endpoint for LLM-judged samples")]
    = None,
    judge_model: Annotated[str | None, typer.Option(help="Model name to ask the judge for")] = None,
    code_time_limit: Annotated[float, typer.Option(help="Seconds each code test may run")] = 5.0,
    code_memory_mb: Annotated[int, typer.Option(help="Memory limit of each code test")] = 512,
    request_log: Annotated[str | None, typer.Option(help="Append every request and verdict to this JSONL")] = None,
    allow_unsafe_code: Annotated[bool, typer.Option(
        "--allow-unsafe-code", help="Run code tests even where the sandbox cannot isolate them (see GET /ping)")]
    = False,
    format_reward: Annotated[bool, typer.Option(
        help="rl_verifier's format reward: score 0.9 x answer + 0.1 x format (rl_verifier's default is on)")]
    = False,
    token: Annotated[str | None, typer.Option(
        help="Require 'Authorization: Bearer <token>' on /reward; prefer the RLC_REWARD_TOKEN environment "
             "variable, since a command line is visible to every user of the machine")] = None,
    verifier_workers: Annotated[int | None, typer.Option(
        help="Worker processes per server process for the verifiers that read model output (default: the CPUs, "
             "at most 4)")] = None,
    verifier_timeout: Annotated[float, typer.Option(
        help="Seconds one verdict may take before its worker is killed and the sample scores 0")] = 20.0,
    max_output_chars: Annotated[int, typer.Option(help="A longer llm_output scores 0 unread")] = 1_000_000,
    max_body_bytes: Annotated[int, typer.Option(help="A larger request body is answered 413")] = 8 << 20,
    read_timeout: Annotated[float, typer.Option(
        help="Seconds a request's headers and body may take to arrive (slow clients are disconnected)")] = 15.0,
    max_connections: Annotated[int, typer.Option(
        help="Connections per server process; past it, requests are answered 503")] = 1024,
) -> None:
    """Serve rewards over HTTP (the II-Thought rl_verifier protocol that `reward_api.api_url` points at)."""
    from rlc.reward_server import serve

    try:
        serve(host, port, workers, judge_url, token=token, judge_model=judge_model,
              code_time_limit_s=code_time_limit, code_memory_mb=code_memory_mb, request_log=request_log,
              format_reward=format_reward, verifier_workers=verifier_workers, verifier_timeout_s=verifier_timeout,
              max_output_chars=max_output_chars, max_body_bytes=max_body_bytes, read_timeout_s=read_timeout,
              max_connections=max_connections, allow_unsafe_code=allow_unsafe_code)
    except (ValueError, ImportError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1) from None


@app.command("schema")
def schema_cmd(
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Write here instead of stdout")] = None,
) -> None:
    """Print (or write) the JSON Schema generated from the config models."""
    from rlc import schema

    _emit(schema.dump(schema.generate()), output)


@app.command("keys")
def keys_cmd(
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Write here instead of stdout")] = None,
) -> None:
    """Print (or write) the table of every config key with its default and status (implemented, warns, refused)."""
    from rlc import keytable, schema

    _emit(keytable.markdown(schema.load()), output)


def _emit(text: str, output: Path | None) -> None:
    """`text` into `output` (written atomically), or to stdout."""
    from rlc.files import write_atomic

    if output:
        write_atomic(output, text)
    else:
        sys.stdout.write(text)


def main() -> None:
    from rlc.entry import guarded

    guarded(app)


if __name__ == "__main__":
    main()
