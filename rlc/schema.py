"""The structural check: the config tree against the JSON Schema generated from the models.

The schema file is generated (`rlc schema`) and committed, so that editors and other tools can use it and so that
validation needs only `json.load`, not a model rebuild. jsonschema reports every violation at once; here each one
becomes a `Diagnostic` with the key path, a plain-English message, and a hint (did-you-mean, allowed values).
"""

from __future__ import annotations

import ast
import inspect
import json
import textwrap
import typing
from collections.abc import Iterator
from functools import cache
from typing import Any

from rlc.diagnostics import Diagnostic, KeyPath
from rlc.resources import resource_dir

SCHEMA_FILE = "rlc.schema.json"
STATUS = "x-rlc"
"""JSON Schema key holding a field's status: `{"status": "warn" | "refused" | "partial", "note": ..., ...}` (see
`rlc.config.base`); here so that readers of the schema file need not import the models."""


def generate() -> dict[str, Any]:
    from rlc.config import RLCConfig

    schema = RLCConfig.model_json_schema(mode="validation")
    _add_descriptions(schema, RLCConfig)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://github.com/rlc-project/rlc/schemas/rlc.schema.json"
    return schema


def _add_descriptions(schema: dict[str, Any], root: type) -> None:
    """Each property's description from the docstring under its field (and each section's from its class)."""
    for cls in _sections(root):
        node = schema if cls is root else schema["$defs"][cls.__name__]
        node.setdefault("description", inspect.getdoc(cls) or "")
        docs = {name: doc for klass in reversed(cls.__mro__) for name, doc in _field_docs(klass).items()}
        for name, prop in node.get("properties", {}).items():
            if name in docs and "description" not in prop:
                prop["description"] = docs[name]


def _sections(root: type) -> list[type]:
    """The model classes reachable from `root`, root first."""
    from pydantic import BaseModel

    found: list[type] = [root]
    for cls in found:
        for field in cls.model_fields.values():  # type: ignore[attr-defined]
            for kind in (field.annotation, *typing.get_args(field.annotation)):
                if isinstance(kind, type) and issubclass(kind, BaseModel) and kind not in found:
                    found.append(kind)
    return found


def _field_docs(cls: type) -> dict[str, str]:
    """`name: type = value` followed by a string literal: that string, cleaned, by field name."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError):  # a class without source (pydantic's own BaseModel)
        return {}
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    return {first.target.id: inspect.cleandoc(second.value.value)
            for first, second in zip(body, body[1:], strict=False)
            if isinstance(first, ast.AnnAssign) and isinstance(first.target, ast.Name)
            and isinstance(second, ast.Expr) and isinstance(second.value, ast.Constant)
            and isinstance(second.value.value, str)}


def dump(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


@cache
def load() -> dict[str, Any]:
    return json.loads((resource_dir("schemas") / SCHEMA_FILE).read_text())


def check(data: dict[str, Any]) -> list[Diagnostic]:
    from jsonschema import Draft202012Validator

    schema = load()
    validator = Draft202012Validator(schema)
    found = [d for error in validator.iter_errors(data) for d in _explain(error, schema)]
    return sorted(found, key=lambda d: tuple(str(p) for p in d.path))


def _explain(error: Any, root: dict[str, Any]) -> Iterator[Diagnostic]:
    path: KeyPath = tuple(error.absolute_path)
    kind = error.validator
    if kind == "additionalProperties":
        from rlc.suggest import did_you_mean

        known = sorted(_properties(error.schema, root))
        for key in sorted(set(error.instance) - set(known)):
            hint = did_you_mean((*path, key), known) or _known_keys_hint(known)
            yield Diagnostic(f"unknown key `{key}`", (*path, key), hint=hint, code="unknown-key")
    elif kind == "required":
        for key in error.validator_value:
            if key not in error.instance:
                yield Diagnostic(f"missing required key `{key}`", (*path, key), hint=_describe(error.schema, key, root))
    elif kind in ("enum", "const"):
        allowed = error.validator_value if kind == "enum" else [error.validator_value]
        yield Diagnostic(f"{_show(error.instance)} is not allowed", path,
                         hint="allowed: " + ", ".join(_show(v) for v in allowed))
    elif kind in ("anyOf", "oneOf"):
        yield from _explain_union(error, path, root)
    elif kind == "type":
        yield Diagnostic(f"expected {_type_words(error.validator_value)}, got {_show(error.instance)}", path)
    else:
        yield Diagnostic(_bound_message(error), path)


def _explain_union(error: Any, path: KeyPath, root: dict[str, Any]) -> Iterator[Diagnostic]:
    """`int | None` and friends: say what was expected instead of "not valid under any of the given schemas"."""
    options = [_resolve(s, root) for s in error.validator_value]
    enums = [v for s in options for v in s.get("enum", [s["const"]] if "const" in s else [])]
    if enums and all("enum" in s or "const" in s or s.get("type") == "null" for s in options):
        allowed = enums + ([None] if any(s.get("type") == "null" for s in options) else [])
        yield Diagnostic(f"{_show(error.instance)} is not allowed", path,
                         hint="allowed: " + ", ".join(_show(v) for v in allowed))
        return
    fitting = [i for i, s in enumerate(options) if "type" in s and _type_ok(error.instance, s)]
    deeper = [sub for sub in error.context if sub.validator not in ("type",)]
    if len(fitting) == 1 and any(sub.schema_path[0] == fitting[0] for sub in deeper):
        # one option has the value's type: its own errors say what is wrong (an unknown key inside a mapping)
        for sub in deeper:
            if sub.schema_path[0] == fitting[0]:
                yield from _explain(sub, root)
        return
    if deeper and all(_type_ok(error.instance, s) is False for s in options if "type" in s):
        best = max(deeper, key=lambda e: len(e.absolute_path))
        yield next(_explain(best, root))
        return
    kinds = sorted({s.get("type", "object") for s in options if isinstance(s.get("type", "object"), str)})
    yield Diagnostic(f"expected {_type_words(kinds)}, got {_show(error.instance)}", path)


def _type_ok(instance: Any, schema: dict[str, Any]) -> bool:
    names = {"string": str, "integer": int, "number": (int, float), "boolean": bool, "array": list,
             "object": dict, "null": type(None)}
    kind = schema.get("type")
    if not isinstance(kind, str) or kind not in names:
        return True
    if isinstance(instance, bool) and kind in ("integer", "number"):
        return False
    return isinstance(instance, names[kind])


def _bound_message(error: Any) -> str:
    words = {"minimum": ">=", "maximum": "<=", "exclusiveMinimum": ">", "exclusiveMaximum": "<",
             "minItems": "at least this many items:", "maxItems": "at most this many items:"}
    if error.validator in words:
        return f"{_show(error.instance)} must be {words[error.validator]} {error.validator_value}"
    return error.message


def _resolve(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        schema = root["$defs"][name]
    return schema


def _properties(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    return _resolve(schema, root).get("properties", {})


def _describe(schema: dict[str, Any], key: str, root: dict[str, Any]) -> str | None:
    return _resolve(_properties(schema, root).get(key, {}), root).get("description")


def _known_keys_hint(known: list[str]) -> str:
    return "known keys here: " + ", ".join(known) if len(known) <= 12 else f"see `rlc schema` ({len(known)} keys)"


def _type_words(kinds: Any) -> str:
    kinds = [kinds] if isinstance(kinds, str) else list(kinds)
    names = {"integer": "an integer", "number": "a number", "string": "a string", "boolean": "true or false",
             "array": "a list", "object": "a mapping", "null": "null"}
    return " or ".join(names.get(k, k) for k in kinds)


def _show(value: Any) -> str:
    if isinstance(value, (dict, list)):
        text = json.dumps(value)
        return f"{'a mapping' if isinstance(value, dict) else 'a list'} {text[:60]}{'…' if len(text) > 60 else ''}"
    return json.dumps(value) if value is not None else "null"
