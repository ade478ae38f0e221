"""Two resolved configs, key by key: what `rlc diff` prints and what `rlc launch --resume` refuses on.

A side is a config file (loaded and resolved like `rlc resolve` does, Hub references pinned where the Hub can be
asked) or a run directory (its `config.resolved.yaml`, exactly what that run read). Values are compared after
redaction (rlc.secrets), so a literal credential never reaches the terminal, and shown as JSON, one key a line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlc.diagnostics import CompileError, Diagnostic

RESOLVED = "config.resolved.yaml"


@dataclass(frozen=True)
class Change:
    key: str
    before: Any
    after: Any
    missing: str | None = None  # "before" or "after": the key exists on one side only

    def line(self) -> str:
        if self.missing == "before":
            return f"+ {self.key}: {_shown(self.after)}"
        if self.missing == "after":
            return f"- {self.key}: {_shown(self.before)}"
        return f"~ {self.key}: {_shown(self.before)} -> {_shown(self.after)}"


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """`{"a": {"b": 1}}` -> `{"a.b": 1}`; an empty mapping stays a value so that `{}` and a missing key differ."""
    if isinstance(node, dict) and node:
        return {k: v for key, value in node.items()
                for k, v in flatten(value, f"{prefix}.{key}" if prefix else str(key)).items()}
    return {prefix: node}


def changes(before: dict[str, Any], after: dict[str, Any], ignore: tuple[str, ...] = ()) -> list[Change]:
    """Every key whose value differs, in the order of `after` (then the keys only `before` has)."""
    from rlc.secrets import redact

    old, new = flatten(redact(before)), flatten(redact(after))
    found = [Change(k, old.get(k), v, None if k in old else "before") for k, v in new.items()
             if k not in old or old[k] != v]
    found += [Change(k, v, None, "after") for k, v in old.items() if k not in new]
    return [c for c in found if c.key not in ignore]


def _shown(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 200 else text[:197] + "..."


def read_run_config(run_dir: Path) -> dict[str, Any]:
    """The resolved config a run directory holds."""
    from ruamel.yaml import YAML, YAMLError

    path = run_dir / RESOLVED
    try:
        data = YAML(typ="safe").load(path.read_text())
    except (OSError, YAMLError, UnicodeDecodeError) as err:
        raise CompileError([Diagnostic(f"cannot read the run's config {path}: {err}",
                                       hint="is this an rlc run directory?")]) from None
    if not isinstance(data, dict):
        raise CompileError([Diagnostic(f"{path} holds no config")])
    return data


def load_side(path: Path, sets: list[str], offline: bool = False) -> dict[str, Any]:
    """A config file resolved (with `sets` applied), or the config a run directory ran with."""
    if path.is_dir():
        if sets:
            raise CompileError([Diagnostic(f"--set applies to config files, and {path} is a run directory")])
        return read_run_config(path)
    from rlc.launch import absolute_local_paths
    from rlc.loader import load_config
    from rlc.resolve import resolve

    resolved = resolve(load_config(path, sets), offline=offline)
    absolute_local_paths(resolved.config)  # as a launch writes them, so that a config and its run compare equal
    return resolved.tree()
