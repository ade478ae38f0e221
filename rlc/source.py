"""YAML text -> a plain tree, plus the file:line:col of every key and value.

ruamel.yaml's round-trip loader records positions; we copy its tree into plain dicts and lists at once, so that
later stages never see ruamel types, and keep the positions in a side table keyed by the dotted path.
The copy also bounds the expanded size, which defuses alias bombs ("billion laughs"): aliases are references in
ruamel's tree and only explode when expanded, which is exactly where we count.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlc.diagnostics import CompileError, Diagnostic, KeyPath, Position

MAX_FILE_BYTES = 4 * 1024 * 1024  # a config is kilobytes; megabytes mean a wrong file
MAX_NODES = 200_000  # expanded nodes, after aliases


@dataclass
class Source:
    """A parsed config document: its plain tree and where each key came from."""

    file: str
    data: dict[str, Any]
    positions: dict[KeyPath, Position] = field(default_factory=dict)

    def position(self, path: KeyPath) -> Position | None:
        """The position of `path`, or of its nearest ancestor that has one."""
        for end in range(len(path), -1, -1):
            if (found := self.positions.get(tuple(path[:end]))) is not None:
                return found
        return None


def load_file(path: str | Path) -> Source:
    name = str(path)
    file = Path(path)
    if not file.exists():
        raise _fail(name, "file not found", hint="check the path")
    if file.is_dir():
        raise _fail(name, "is a directory, not a YAML file")
    size = file.stat().st_size
    if size > MAX_FILE_BYTES:
        raise _fail(name, f"file is {size / 2**20:.1f} MiB; a config is at most {MAX_FILE_BYTES // 2**20} MiB",
                    hint="is this the right file?")
    raw = file.read_bytes()
    if b"\x00" in raw:
        raise _fail(name, "binary file, not YAML text")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise _fail(name, f"not UTF-8 text (bad byte at offset {err.start})") from None
    return load_text(text, name)


def load_text(text: str, name: str = "<string>") -> Source:
    from ruamel.yaml import YAML
    from ruamel.yaml.error import MarkedYAMLError, YAMLError

    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False
    try:
        doc = yaml.load(text)
    except MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        pos = Position(name, mark.line + 1, mark.column + 1) if mark else Position(name, 1, 1)
        problem = " ".join(str(p) for p in (err.context, err.problem) if p)
        if "\t" in text and "\\t" in str(err):
            problem += " (tabs cannot indent YAML; use spaces)"
        raise CompileError([Diagnostic(f"YAML syntax error: {problem}", position=pos)]) from None
    except YAMLError as err:
        raise _fail(name, f"YAML error: {err}") from None
    if doc is None:
        raise _fail(name, "empty document", hint="a config is a mapping such as `trainer: {total_epochs: 1}`")
    if not isinstance(doc, dict):
        kind = "list" if isinstance(doc, list) else "single value"
        raise _fail(name, f"the document is a {kind}, not a mapping of sections",
                    hint="a config is a mapping such as `trainer: {total_epochs: 1}`")
    positions: dict[KeyPath, Position] = {}
    budget = [MAX_NODES]
    data = _plain(doc, (), name, positions, budget)
    return Source(name, data, positions)


def _plain(node: Any, path: KeyPath, name: str, positions: dict[KeyPath, Position], budget: list[int]) -> Any:
    budget[0] -= 1
    if budget[0] < 0:
        raise _fail(name, f"document expands to more than {MAX_NODES} nodes (an alias bomb?)")
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if not isinstance(key, str):
                key = str(key)
            child = (*path, key)
            line, col = node.lc.key(key) if hasattr(node, "lc") and key in node else (None, None)
            if line is not None:
                positions[child] = Position(name, line + 1, col + 1)
            out[key] = _plain(value, child, name, positions, budget)
        return out
    if isinstance(node, list):
        out_list = []
        for index, item in enumerate(node):
            child = (*path, index)
            if hasattr(node, "lc"):
                line, col = node.lc.item(index)
                positions[child] = Position(name, line + 1, col + 1)
            out_list.append(_plain(item, child, name, positions, budget))
        return out_list
    return _scalar(node)


def _scalar(node: Any) -> Any:
    """ruamel's scalar subclasses (ScalarFloat, TaggedScalar...) -> builtins."""
    if node is None or isinstance(node, bool):
        return node
    for kind in (int, float, str):
        if isinstance(node, kind):
            return kind(node)
    return str(node)


def _fail(name: str, message: str, hint: str | None = None) -> CompileError:
    return CompileError([Diagnostic(message, position=Position(name, 1, 1), hint=hint)])
