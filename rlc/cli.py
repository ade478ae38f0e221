"""The `rlc` command: thin wrappers that call one stage each and print diagnostics.

Heavy modules are imported inside the commands, so `rlc validate` pays only for what it uses.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from rlc.diagnostics import CompileError, Diagnostic, render

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Compile, check and launch RL post-training jobs (GRPO, PPO) from one YAML file.")

SetOption = Annotated[list[str] | None, typer.Option("--set", "-s", help="Override a key: a.b.c=value")]


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


@app.command("schema")
def schema_cmd(
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Write here instead of stdout")] = None,
) -> None:
    """Print (or write) the JSON Schema generated from the config models."""
    from rlc import schema

    text = schema.dump(schema.generate())
    if output:
        output.write_text(text)
    else:
        sys.stdout.write(text)


def main() -> None:
    try:
        app()
    except CompileError as err:
        _print(err.diagnostics)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
