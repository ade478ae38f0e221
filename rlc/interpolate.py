"""OmegaConf-style references in config values: `${trainer.project_name}` and `${oc.env:VAR,default}`.

verl configs are full of them, so rlc accepts the two forms users actually write and resolves them once, before
anything else reads the tree. A value that is exactly one reference takes the referenced value's type (an int
stays an int); a reference inside a longer string is formatted into it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from typing import Any

from rlc.diagnostics import Diagnostic, KeyPath

REFERENCE = re.compile(r"\$\{([^{}]+)\}")
ENVIRONMENT = re.compile(r"\$\{\s*oc\.env:.*\}", re.S)  # a value that is one environment reference
MAX_DEPTH = 10


class MissingKey(LookupError):
    """The reference names a key the tree does not have (yet: a default may supply it later)."""


def interpolate(tree: dict[str, Any], *, complete: bool = True) -> tuple[dict[str, Any], list[Diagnostic]]:
    """Resolve references. With `complete=False` (the user's partial tree) a reference to a key the user did not
    write is left for resolution to settle once defaults are explicit."""
    problems: list[Diagnostic] = []
    return _walk(tree, tree, (), problems, complete), problems


def _walk(node: Any, root: dict[str, Any], path: KeyPath, problems: list[Diagnostic], complete: bool) -> Any:
    if isinstance(node, dict):
        return {k: _walk(v, root, (*path, k), problems, complete) for k, v in node.items()}
    if isinstance(node, list):
        return [_walk(v, root, (*path, i), problems, complete) for i, v in enumerate(node)]
    if isinstance(node, str) and "${" in node:
        try:
            value = _value(node, root, 0)
            return _typed(value, path) if ENVIRONMENT.fullmatch(node) and isinstance(value, str) else value
        except MissingKey as err:
            if complete:
                problems.append(Diagnostic(str(err), path, hint="references look like ${section.key}"))
        except LookupError as err:
            problems.append(Diagnostic(str(err), path, hint="references look like ${section.key} or ${oc.env:VAR}"))
    return node


def _value(text: str, root: dict[str, Any], depth: int) -> Any:
    if depth > MAX_DEPTH:
        raise LookupError(f"reference cycle in {text!r}")
    spans = list(_spans(text))
    if len(spans) == 1 and spans[0][:2] == (0, len(text)):
        found = _lookup(spans[0][2].strip(), root, depth)
        return _value(found, root, depth + 1) if isinstance(found, str) and "${" in found else found
    out, pos = [], 0
    for start, end, _ in spans:
        out += [text[pos:start], str(_value(text[start:end], root, depth + 1))]
        pos = end
    return "".join(out) + text[pos:]


def _spans(text: str) -> Iterator[tuple[int, int, str]]:
    """The outermost `${...}` references in `text`: (start, end, inside); nested ones are resolved by their outer
    one (`${oc.env:X,'${oc.env:HOME}/m'}` reads HOME only where X is unset)."""
    pos = 0
    while (start := text.find("${", pos)) >= 0:
        depth, end = 0, start + 1
        while end < len(text):
            depth += {"{": 1, "}": -1}.get(text[end], 0)
            end += 1
            if not depth:
                break
        if depth:
            return
        yield start, end, text[start + 2:end - 1]
        pos = end


def _typed(text: str, path: KeyPath) -> Any:
    """An environment variable's text typed as Hydra types a command-line word, where the field is not a string:
    `${oc.env:N,8}` in an integer field is 8, as `key=${N:-8}` on verl's command line would have been."""
    from rlc import schema
    from rlc.edits import field_types
    from rlc.overrides import scalar

    kinds, _ = field_types(schema.load(), [str(p) for p in path])
    typed = scalar(text.strip())
    fits = {bool: "boolean", int: "integer", float: "number", type(None): "null"}.get(type(typed))
    if not kinds:  # a free-form field: Hydra's typing of the word
        return typed
    if "string" in kinds or fits is None:
        return text
    return float(typed) if fits == "integer" and "integer" not in kinds and "number" in kinds else (
        typed if fits in kinds or (fits == "integer" and "number" in kinds) else text)


def _lookup(expression: str, root: dict[str, Any], depth: int = 0) -> Any:
    if expression.startswith("oc.env:"):
        name, _, default = expression[len("oc.env:"):].partition(",")
        value = os.environ.get(name.strip())
        if value is None and not default:
            raise LookupError(f"environment variable {name.strip()} is not set")
        if value is not None:
            return value
        default = default.strip()
        if len(default) > 1 and default[0] == default[-1] and default[0] in "'\"":
            default = default[1:-1]
        return _value(default, root, depth + 1) if "${" in default else default
    if ":" in expression:
        raise LookupError(f"resolver `{expression.split(':')[0]}` is not supported")
    node: Any = root
    for part in expression.split("."):
        if not isinstance(node, dict) or part not in node:
            raise MissingKey(f"${{{expression}}} refers to a key that is not in the config")
        node = node[part]
    return node
