"""YAML text -> a plain tree, plus the file:line:col of every key and value.

ruamel.yaml's round-trip loader records positions (with the plain scanner: comments are dropped anyway); we copy its
tree into plain dicts and lists at once, so that later stages never see ruamel types, and keep the positions in a
side table keyed by the dotted path.
The copy also bounds the expanded size, which defuses alias bombs ("billion laughs"): aliases are references in
ruamel's tree and only explode when expanded, which is exactly where we count. Nesting depth is bounded while
composing (ruamel's composer recurses), and only YAML's own tags are taken: a config holds plain data, so
`!!python/object` and custom tags are errors rather than objects. Only regular files are read: a FIFO or a device
would block or never end.

ruamel's parser is pure Python: a fifth of a cold `rlc validate` of verl's 1,100-key config. So a document is first
read by libyaml (PyYAML's C parser, `_quick_load`), which gives the same tree and positions, for the documents where
that is certain: plain data without tags, aliases, merge keys, directives or duplicate keys, and plain scalars
whose YAML 1.2 meaning is unambiguous (decimal integers and floats, true/false, null). Anything else (and every
error) is read again by ruamel, whose results and messages are the reference; `tests/rlc/test_source.py` compares
the two on every YAML file of the repository and of verl.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlc.diagnostics import CompileError, Diagnostic, KeyPath, Position

MAX_FILE_BYTES = 4 * 1024 * 1024  # a config is kilobytes; megabytes mean a wrong file
MAX_NODES = 200_000  # expanded nodes, after aliases
MAX_DEPTH = 64  # nesting levels; verl's deepest config is about 8
_YAML_TAGS = {f"tag:yaml.org,2002:{kind}" for kind in ("str", "int", "float", "bool", "null", "map", "seq")}
MAX_QUICK_NESTING = 2000  # libyaml's composer recurses in C: a document that might nest deeper goes to ruamel
_PLAIN_NULL = ("", "~", "null", "Null", "NULL")
_PLAIN_BOOL = {"true": True, "True": True, "TRUE": True, "false": False, "False": False, "FALSE": False}
_PLAIN_INT = re.compile(r"[-+]?(?:0|[1-9][0-9]*)")
_PLAIN_FLOAT = re.compile(r"[-+]?[0-9]+(?:\.[0-9]*(?:[eE][-+]?[0-9]+)?|[eE][-+]?[0-9]+)")
_MAYBE_SPECIAL = re.compile(r"[-+]?\.?[0-9]|\.(?:inf|Inf|INF|nan|NaN|NAN)$|<<$|=$")  # numbers, dates, merge...


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


def load_file(path: str | Path, *, allow_empty: bool = False) -> Source:
    """`allow_empty`: an empty document is an empty mapping (Hydra's included configs may be empty)."""
    name = str(path)
    raw = _read_regular(Path(path), name)
    if b"\x00" in raw:
        raise _fail(name, "binary file, not YAML text")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise _fail(name, f"not UTF-8 text (bad byte at offset {err.start})") from None
    return load_text(text, name, allow_empty=allow_empty)


def _read_regular(file: Path, name: str) -> bytes:
    """The bytes of a regular file of at most MAX_FILE_BYTES; opened without blocking, so a FIFO cannot hang us."""
    try:
        handle = os.open(file, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise _fail(name, "file not found", hint="check the path") from None
    except IsADirectoryError:
        raise _fail(name, "is a directory, not a YAML file") from None
    except OSError as err:
        raise _fail(name, f"cannot open: {err.strerror}") from None
    mode = os.fstat(handle).st_mode
    if not stat.S_ISREG(mode):
        os.close(handle)
        if stat.S_ISDIR(mode):
            raise _fail(name, "is a directory, not a YAML file")
        kind = "a FIFO" if stat.S_ISFIFO(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) \
            else "a socket" if stat.S_ISSOCK(mode) else "not a regular file"
        raise _fail(name, f"is {kind}, not a regular file", hint="a config is a YAML file on disk")
    with os.fdopen(handle, "rb") as stream:
        raw = stream.read(MAX_FILE_BYTES + 1)
    if len(raw) > MAX_FILE_BYTES:
        size = os.stat(file).st_size
        raise _fail(name, f"file is {size / 2**20:.1f} MiB; a config is at most {MAX_FILE_BYTES // 2**20} MiB",
                    hint="is this the right file?")
    return raw


def load_text(text: str, name: str = "<string>", *, allow_empty: bool = False) -> Source:
    quick = _quick_load(text, name)
    if quick is not None:
        return quick
    from ruamel.yaml import YAML
    from ruamel.yaml.composer import MaxDepthExceededError
    from ruamel.yaml.error import MarkedYAMLError, YAMLError
    from ruamel.yaml.parser import Parser
    from ruamel.yaml.scanner import Scanner

    yaml = YAML(typ="rt")
    # the round-trip constructor records positions; comments are never read here, and skipping them in the
    # scanner saves a third of the parse
    yaml.Scanner, yaml.Parser = Scanner, Parser
    yaml.allow_duplicate_keys = False
    yaml.max_depth = MAX_DEPTH
    try:
        doc = yaml.load(text)
    except MaxDepthExceededError as err:
        raise _syntax(f"nested more than {MAX_DEPTH} levels deep; a config is a few levels of sections",
                      err.problem_mark, text, name) from None
    except MarkedYAMLError as err:
        problem = " ".join(str(p) for p in (err.context, err.problem) if p)
        if "\t" in text and "\\t" in str(err):
            problem += " (tabs cannot indent YAML; use spaces)"
        raise _syntax(f"YAML syntax error: {problem}", err.problem_mark or err.context_mark, text, name) from None
    except YAMLError as err:
        raise _fail(name, f"YAML error: {err}") from None
    if doc is None and allow_empty:
        return Source(name, {})
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


class _Unsure(Exception):
    """The quick reader cannot promise ruamel's result for this document."""


def _quick_load(text: str, name: str) -> Source | None:
    """The document read by libyaml, or None where only ruamel's reading is certain (see the module docstring)."""
    try:
        import yaml

        loader = yaml.CSafeLoader
    except (ImportError, AttributeError):  # PyYAML without libyaml
        return None
    # each level of nesting takes a bracket, a dash, a `?` or one more column of indentation
    indent = max((len(line) - len(line.lstrip(" ")) for line in text.splitlines()), default=0)
    nesting = text.count("[") + text.count("{") + text.count("-") + text.count("?") + indent
    if "!" in text or text.startswith("\ufeff") or re.search(r"^%", text, re.M) or nesting > MAX_QUICK_NESTING:
        return None
    try:
        root = yaml.compose(text, Loader=loader)
        if not isinstance(root, yaml.MappingNode):
            return None  # empty, or not a mapping: ruamel's message
        positions: dict[KeyPath, Position] = {}
        data = _quick_plain(root, (), name, positions, [MAX_NODES], set())
    except (yaml.YAMLError, _Unsure, RecursionError):
        return None
    return Source(name, data, positions)


def _quick_plain(node: Any, path: KeyPath, name: str, positions: dict[KeyPath, Position], budget: list[int],
                 seen: set[int]) -> Any:
    budget[0] -= 1
    if budget[0] < 0 or id(node) in seen or len(path) >= MAX_DEPTH - 1:  # an alias, or too big or deep
        raise _Unsure
    seen.add(id(node))
    kind = type(node).__name__
    if kind == "MappingNode":
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if type(key_node).__name__ != "ScalarNode":
                raise _Unsure  # a complex key
            key = _quick_scalar(key_node)
            child = (*path, key if isinstance(key, str) else str(key))
            if key == "<<" or child[-1] in out:
                raise _Unsure  # a merge key, or a duplicate (ruamel's error)
            positions[child] = Position(name, key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            out[child[-1]] = _quick_plain(value_node, child, name, positions, budget, seen)
        return out
    if kind == "SequenceNode":
        items = []
        for index, item in enumerate(node.value):
            child = (*path, index)
            positions[child] = Position(name, item.start_mark.line + 1, item.start_mark.column + 1)
            items.append(_quick_plain(item, child, name, positions, budget, seen))
        return items
    return _quick_scalar(node)


def _quick_scalar(node: Any) -> Any:
    """A scalar's value under YAML 1.2 (ruamel's default), for the plain forms that are certain."""
    value = node.value
    if node.style:  # quoted or block: a string
        return value
    if value in _PLAIN_NULL:
        return None
    if value in _PLAIN_BOOL:
        return _PLAIN_BOOL[value]
    if _PLAIN_INT.fullmatch(value):
        return int(value)
    if _PLAIN_FLOAT.fullmatch(value):
        return float(value)
    if _MAYBE_SPECIAL.match(value):  # octal, hex, `1_000`, `.inf`, a date...: ruamel's reading
        raise _Unsure
    return value


def _syntax(message: str, mark: Any, text: str, name: str) -> CompileError:
    """A diagnostic at `mark` that quotes the offending line."""
    if mark is None:
        return _fail(name, message)
    lines = text.splitlines()
    quote = lines[mark.line] if mark.line < len(lines) else None
    return CompileError([Diagnostic(message, position=Position(name, mark.line + 1, mark.column + 1),
                                    quote=quote)])


def _plain(node: Any, path: KeyPath, name: str, positions: dict[KeyPath, Position], budget: list[int]) -> Any:
    budget[0] -= 1
    if budget[0] < 0:
        raise _fail(name, f"document expands to more than {MAX_NODES} nodes (an alias bomb?)")
    _check_tag(node, path, name, positions)
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            child = (*path, key if isinstance(key, str) else str(key))
            found = _key_line_col(node, key)
            if found is not None:
                positions[child] = Position(name, found[0] + 1, found[1] + 1)
            out[child[-1]] = _plain(value, child, name, positions, budget)
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


def _key_line_col(node: Any, key: Any) -> tuple[int, int] | None:
    """Where `key` of a round-trip mapping was written: in the mapping itself or in one merged in with `<<:`."""
    own = getattr(getattr(node, "lc", None), "data", None) or {}
    if key in own:
        return own[key][0], own[key][1]
    for merged in getattr(node, "merge", None) or ():
        merged = merged[1] if isinstance(merged, tuple) else merged
        if key in merged:
            return _key_line_col(merged, key)
    return None


def _check_tag(node: Any, path: KeyPath, name: str, positions: dict[KeyPath, Position]) -> None:
    tag = getattr(getattr(node, "tag", None), "value", None)
    if tag is not None and tag not in _YAML_TAGS:
        shown = tag.replace("tag:yaml.org,2002:", "!!")
        raise CompileError([Diagnostic(f"the YAML tag `{shown}` is not supported: a config holds plain values "
                                       "(strings, numbers, booleans, lists, mappings)", path,
                                       _nearest(positions, path, name), hint="remove the tag")])
    if isinstance(node, (bytes, AbstractSet)):
        kind = "binary (`!!binary`)" if isinstance(node, bytes) else "set (`!!set`)"
        raise CompileError([Diagnostic(f"{kind} values are not supported", path, _nearest(positions, path, name))])


def _nearest(positions: dict[KeyPath, Position], path: KeyPath, name: str) -> Position:
    for end in range(len(path), -1, -1):
        if (found := positions.get(tuple(path[:end]))) is not None:
            return found
    return Position(name, 1, 1)


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
