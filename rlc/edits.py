"""Apply parsed overrides to a config tree, typing each value by the schema field it lands in.

Claims are checked before anything is changed: every override is parsed and typed first, so one bad override
fails the whole set with nothing half-applied, and the order of `--set` flags does not change the outcome
except where two of them name the same key (the last one wins, as on verl's command line).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from rlc.diagnostics import CompileError, Diagnostic, KeyPath, Position
from rlc.overrides import Override, OverrideError, coerce, parse_override


def apply_overrides(tree: dict[str, Any], texts: Sequence[str], *, expand_env: bool = False,
                    where: str = "--set", labels: Sequence[str] | None = None
                    ) -> tuple[dict[str, Any], dict[KeyPath, Position]]:
    """`labels`, one per text, name where each came from in messages (`--backend x`); by default `{where} text`."""
    from rlc import schema

    root = schema.load()
    origins = list(labels) if labels is not None else [f"{where} {text}" for text in texts]
    parsed, problems = [], []
    for text, origin in zip(texts, origins, strict=True):
        try:
            override = parse_override(text, expand_env)
            parsed.append((override, _typed(override, root), Position(origin, 0, 0)))
        except OverrideError as err:
            problems.append(Diagnostic(err.reason if err.column is None else f"{err.reason} at column "
                                       f"{err.column + 1}", position=Position(origin, 0, 0)))
    if problems:
        raise CompileError(problems)
    out = copy.deepcopy(tree)
    positions: dict[KeyPath, Position] = {}
    for override, value, origin in parsed:
        try:
            _apply(out, override, value)
        except OverrideError as err:
            problems.append(Diagnostic(err.reason, override.path, origin))
            continue
        positions[override.path] = origin
    if problems:
        raise CompileError(problems)
    return out, positions


def _typed(override: Override, root: dict[str, Any]) -> Any:
    if override.op == "delete":
        return override.value
    scalar_at = scalar_prefix(root, override.path)
    if scalar_at:
        raise OverrideError(override.text, f"`{'.'.join(override.path[:scalar_at])}` is a value, not a section")
    expected, is_section = field_types(root, override.path)
    if is_section and not isinstance(override.value, dict):
        raise OverrideError(override.text, f"`{override.key}` is a section, not a value; set one of its keys, "
                                           f"e.g. {override.key}.<key>=...")
    return coerce(override, expected)


def field_types(root: dict[str, Any], path: Sequence[str]) -> tuple[set[str], bool]:
    """The JSON Schema types allowed at `path` (empty when unknown or free-form) and whether it is a section."""
    node: dict[str, Any] | None = root
    for part in path:
        node = _child(_resolve(node, root), part, root) if node is not None else None
        if node is None:
            return set(), False
    options = _options(_resolve(node, root), root)
    kinds = {o["type"] for o in options if isinstance(o.get("type"), str)}
    is_section = any("properties" in o for o in options) and not kinds - {"object"}
    return (kinds | ({"object"} if is_section else set())), is_section


def scalar_prefix(root: dict[str, Any], path: Sequence[str]) -> int:
    """How many leading parts of `path` name a scalar field that the rest of the path would descend into."""
    for end in range(1, len(path)):
        kinds, is_section = field_types(root, path[:end])
        if kinds and not is_section and not kinds & {"object", "array"}:
            return end
    return 0


def _child(node: dict[str, Any], key: str, root: dict[str, Any]) -> dict[str, Any] | None:
    for option in _options(node, root):
        if key in option.get("properties", {}):
            return option["properties"][key]
        extra = option.get("additionalProperties")
        if isinstance(extra, dict):
            return extra
    return None


def schema_options(node: dict[str, Any], root: dict[str, Any]) -> list[dict[str, Any]]:
    """The object schemas `node` may be: itself, or each branch of its anyOf/oneOf, with `$ref`s followed."""
    return _options(_resolve(node, root), root)


def _options(node: dict[str, Any], root: dict[str, Any]) -> list[dict[str, Any]]:
    branches = node.get("anyOf") or node.get("oneOf")
    return [_resolve(b, root) for b in branches] if branches else [node]


def _resolve(node: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = root["$defs"][node["$ref"].rsplit("/", 1)[-1]]
    return node


def _apply(tree: dict[str, Any], override: Override, value: Any) -> None:
    *parents, last = override.path
    node = tree
    for depth, part in enumerate(parents):
        child = node.get(part)
        if child is None and override.op != "delete":
            child = node[part] = {}
        if child is None:
            return _delete_default(override, value)
        if not isinstance(child, dict):
            raise OverrideError(override.text, f"`{'.'.join(override.path[:depth + 1])}` is a value, not a section")
        node = child
    exists = last in node
    if override.op == "add" and exists:
        raise OverrideError(override.text, f"`{override.key}` is already set; use `++{override.key}=...` to "
                                           "override it")
    if override.op == "delete":
        if not exists:
            return _delete_default(override, value)
        if override.raw_value is not None and node[last] != value:
            raise OverrideError(override.text, f"`{override.key}` is {node[last]!r}, not {value!r}")
        del node[last]
        return
    node[last] = value


def _delete_default(override: Override, value: Any) -> None:
    """`~key` for a key the file does not set: as in Hydra, it deletes the default, so rlc's default applies
    (nothing to change). Hydra's `~key=value` checks the value first; here the value is rlc's default."""
    known, has_default, default = schema_default(override.path)
    if not known:
        raise OverrideError(override.text, f"cannot delete `{override.key}`: it is not set, and rlc has no such key")
    if override.raw_value is not None and (not has_default or default != value):
        shown = f"rlc's default {default!r}" if has_default else "not set"
        raise OverrideError(override.text, f"`{override.key}` is {shown}, not {value!r}")


def schema_default(path: Sequence[str | int]) -> tuple[bool, bool, Any]:
    """For the key at `path`: whether the schema declares it, whether it has a default, and the default."""
    from rlc import schema

    root = schema.load()
    node: dict[str, Any] = root
    for part in path:
        found = [o["properties"][part] for o in _options(_resolve(node, root), root)
                 if part in o.get("properties", {})]
        if not found:
            return False, False, None
        node = found[0]
    node = _resolve(node, root)
    return True, "default" in node, node.get("default")
