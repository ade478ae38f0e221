"""A run directory as a record: how the run was launched (`launch.json`), from which file (`config.source.yaml`),
and what it resolved to (`config.resolved.yaml`, `plan.json`).

`rlc launch --resume` reads the record back so that flags need not be repeated, and compares against it so that a
resume never silently becomes another run. Replaced files are moved to `history/<time>/`, never overwritten.
"""

from __future__ import annotations

import contextlib
import json
import shlex
import shutil
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from rlc.diagnostics import CompileError, Diagnostic
from rlc.files import write_atomic

RECORD = "launch.json"
SOURCE_COPY = "config.source.yaml"
RUN_FILES = ("config.resolved.yaml", "plan.json", "runtime_env.json", RECORD, SOURCE_COPY)
HISTORY = "history"


@dataclass
class Record:
    """What `rlc launch` was given: enough to launch the same run again."""

    config: str
    sets: list[str] = field(default_factory=list)
    backend: str | None = None
    nnodes: int | None = None
    gpus_per_node: int | None = None
    executor: str = "local"
    no_pin: bool = False
    dry_run: bool = False
    time: str = ""

    def command(self) -> str:
        words = ["rlc", "launch", self.config, "--executor", self.executor]
        for flag, value in (("--backend", self.backend), ("--nnodes", self.nnodes),
                            ("--gpus-per-node", self.gpus_per_node)):
            words += [flag, str(value)] if value is not None else []
        words += [word for text in self.sets for word in ("--set", text)]
        return shlex.join(words + ["--no-pin"] * self.no_pin)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Record:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def read(run_dir: Path) -> Record | None:
    try:
        return Record.from_json(json.loads((run_dir / RECORD).read_text()))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError) as err:
        raise CompileError([Diagnostic(f"cannot read {run_dir / RECORD}: {err}")]) from None


def write(run_dir: Path, record: Record, source: Path, private: bool) -> None:
    record.time = time.strftime("%Y-%m-%d %H:%M:%S")
    _save(run_dir, record)
    with contextlib.suppress(OSError):  # read moments ago; the copy is a courtesy, the resolved config the record
        write_atomic(run_dir / SOURCE_COPY, source.read_bytes(), mode=0o600 if private else 0o644)


def mark_started(run_dir: Path) -> None:
    """A dry run's record becomes a started run's when `--resume` starts it."""
    record = read(run_dir)
    if record is not None and record.dry_run:
        record.dry_run = False
        _save(run_dir, record)


def _save(run_dir: Path, record: Record) -> None:
    write_atomic(run_dir / RECORD, json.dumps(asdict(record), indent=2) + "\n")


def check_fresh(run_dir: Path) -> str | None:
    """Why a new run may not start in `run_dir`, or None (it does not exist, or is empty). A dry run's directory
    counts as a run: `--resume` starts what it planned."""
    if not run_dir.exists():
        return None
    if not run_dir.is_dir():
        return f"{run_dir} exists and is not a directory"
    entries = sorted(p.name for p in run_dir.iterdir())
    if not entries:
        return None
    record = read(run_dir)
    if record is not None or (run_dir / "config.resolved.yaml").exists():
        how = f"{'a dry run of ' if record.dry_run else 'launched as '}{record.command()}" if record else "unknown"
        return f"{run_dir} already holds a run ({how})"
    shown = ", ".join(entries[:5]) + (f" and {len(entries) - 5} more" if len(entries) > 5 else "")
    return f"{run_dir} is not empty ({shown}): a new run starts in a new or empty directory"


def all_scripts() -> set[str]:
    from rlc.render import SCRIPTS

    return {name for names in SCRIPTS.values() for name in names}


def archive(run_dir: Path) -> Path:
    """Move the run's launch files (config, plan, record, scripts) to history/<time>/; returns that folder."""
    target = run_dir / HISTORY / time.strftime("%Y%m%d-%H%M%S")
    suffix = 0
    while target.exists():
        suffix += 1
        target = target.with_name(f"{target.name.split('.')[0]}.{suffix}")
    target.mkdir(parents=True)
    for name in (*RUN_FILES, *sorted(all_scripts())):
        if (run_dir / name).exists():
            shutil.move(str(run_dir / name), target / name)
    return target


def remove_stale_scripts(run_dir: Path, keep: list[Path]) -> None:
    """Scripts of another executor (a dry run's) must not sit beside the ones that run."""
    for name in all_scripts() - {p.name for p in keep}:
        (run_dir / name).unlink(missing_ok=True)
