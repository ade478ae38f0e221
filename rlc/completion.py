"""Shell completion of config keys (`--set`, `--explain`, `rlc explain`) and of their fixed values (`Literal`s,
booleans), read from the committed JSON Schema.

The shell runs `rlc` for every Tab, so this reads one JSON file and never imports the pydantic models.
"""

from __future__ import annotations

from functools import cache
from typing import Any


@cache
def _keys() -> dict[str, tuple[dict[str, Any], bool]]:
    """Every dotted key: (its JSON Schema property, whether it is a section)."""
    from rlc import keytable, schema

    return {key: (prop, section is not None) for key, prop, section in keytable.properties(schema.load())}


def all_keys() -> list[str]:
    return list(_keys())


def values(prop: dict[str, Any]) -> list[str]:
    """The values a key can only take, as written on a command line: its `enum`s, true/false, null."""
    found: list[str] = []
    for option in [prop, *prop.get("anyOf", []), *prop.get("oneOf", [])]:
        found += [_word(v) for v in option.get("enum", [])]
        found += [_word(option["const"])] if "const" in option else []
        found += ["true", "false"] if option.get("type") == "boolean" else []
        found += ["null"] if option.get("type") == "null" else []
    return list(dict.fromkeys(found))


def _word(value: Any) -> str:
    if value is None:
        return "null"
    return str(value).lower() if isinstance(value, bool) else str(value)


def complete_key(incomplete: str) -> list[str]:
    """Keys that start with what was typed, one level at a time (`trainer.` offers trainer's keys, not all)."""
    depth = incomplete.count(".")
    return [key for key in _keys() if key.startswith(incomplete) and key.count(".") == depth]


def complete_set(incomplete: str) -> list[str]:
    """`key=value` for `--set`: keys until the `=`, then the key's fixed values (none for a free value)."""
    key, equals, typed = incomplete.lstrip("+~").partition("=")
    prefix = incomplete[:len(incomplete) - len(incomplete.lstrip("+~"))]
    if equals:
        prop = _keys().get(key, ({}, False))[0]
        return [f"{prefix}{key}={v}" for v in values(prop) if v.startswith(typed)]
    return [prefix + k + ("." if _keys()[k][1] else "=") for k in complete_key(key)]


def describe(key: str) -> dict[str, Any] | None:
    """What `rlc explain` prints for one key, or None when the schema has no such key."""
    from rlc import keytable, schema

    for row in keytable.rows(schema.load()):
        if row.key == key:
            prop = _keys()[key][0]
            return {"key": key, "status": row.status, "default": row.default, "text": row.text,
                    "values": values(prop)}
    return None
