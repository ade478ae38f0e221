"""The `rlc` program's entry point: `rlc validate` without typer, everything else through the typer app (`rlc.cli`).

`rlc validate` is the command users (and editors, and pre-commit hooks) start most, and importing typer and click
is a sixth of a cold one. Its command line is simple, so it is read here when it is exactly one of the forms below;
anything else (help, completion, a flag not listed, `-s key value` without `=`) goes to typer, which prints its own
usage messages as before. What validate prints and its exit code are those of `rlc.cli.validate`, which keeps the
reference implementation (and its help text).

    rlc validate FILE... [--set|-s KEY=VALUE | -s ~KEY]... [--format text|json]
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable
from pathlib import Path

SET_FLAGS = ("--set", "-s")
ANSI = re.compile(r"\033\[[;?0-9]*[a-zA-Z]")  # click.echo strips these from output that is not a terminal


def main() -> None:
    quick_validate(sys.argv[1:])
    from rlc.cli import app

    guarded(app)


def guarded(call: Callable[[], object]) -> None:
    """Run the CLI: a stage's CompileError is its diagnostics and exit 1, a bug of ours one line (exit 2)."""
    from rlc.diagnostics import CompileError, render

    try:
        call()
    except CompileError as err:
        if err.diagnostics:
            _echo(render(err.diagnostics), err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as err:  # a bug of ours: one line for the user, the traceback on request
        if os.environ.get("RLC_DEBUG"):
            raise
        print(f"rlc: internal error: {type(err).__name__}: {err}\n(set RLC_DEBUG=1 for the traceback, and please "
              "report it)", file=sys.stderr)
        sys.exit(2)


def quick_validate(argv: list[str]) -> None:
    """Run `rlc validate` and exit, if `argv` is a validate command line of the plain form; else return."""
    parsed = _parse_validate(argv)
    if parsed is not None:
        files, sets, fmt = parsed
        guarded(lambda: sys.exit(validate(files, sets, fmt)))


def _parse_validate(argv: list[str]) -> tuple[list[Path], list[str], str] | None:
    if not argv or argv[0] != "validate":
        return None
    files: list[Path] = []
    sets: list[str] = []
    fmt = "text"
    words = iter(argv[1:])
    for word in words:
        if word in SET_FLAGS:
            value = next(words, None)
            if value is None or ("=" not in value and not value.startswith("~")):
                return None  # typer's message for it
            sets.append(value)
        elif word == "--format":
            fmt = next(words, "")
            if fmt not in ("text", "json"):
                return None
        elif word.startswith("-"):
            return None
        else:
            files.append(Path(word))
    return (files, sets, fmt) if files else None


def validate(files: list[Path], sets: list[str], fmt: str) -> int:
    """What `rlc.cli.validate` prints, and its exit code."""
    # pydantic looks for plugins in the entry points of every installed distribution (a scan of the environment)
    # before it builds a validator; rlc's models use none, and this process starts no other
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    from rlc.diagnostics import CompileError, Diagnostic, render
    from rlc.loader import load_config

    everything: list[Diagnostic] = []
    failed = False
    for file in files:
        try:
            everything += load_config(file, sets).warnings
        except CompileError as err:
            everything += err.diagnostics
            failed = True
    if everything:
        _echo(render(everything, fmt), err=fmt == "text")  # type: ignore[arg-type]
    if fmt == "text":
        _echo(f"{'invalid' if failed else 'valid'}: {len(files)} file(s), "
              f"{sum(d.severity == 'error' for d in everything)} error(s), "
              f"{sum(d.severity == 'warning' for d in everything)} warning(s)", err=failed)
    return 1 if failed else 0


def _echo(text: str, err: bool = False) -> None:
    stream = sys.stderr if err else sys.stdout
    if not stream.isatty():
        text = ANSI.sub("", text)
    stream.write(text + "\n")
    stream.flush()
