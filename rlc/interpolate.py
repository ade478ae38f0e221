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
            return _value(node, root, 0)
        except MissingKey as err:
            if complete:
                problems.append(Diagnostic(str(err), path, hint="references look like ${section.key}"))
        except LookupError as err:
            problems.append(Diagnostic(str(err), path, hint="references look like ${section.key} or ${oc.env:VAR}"))
    return node


def _value(text: str, root: dict[str, Any], depth: int) -> Any:
    if depth > MAX_DEPTH:
        raise LookupError(f"reference cycle in {text!r}")
    whole = REFERENCE.fullmatch(text)
    if whole:
        found = _lookup(whole.group(1).strip(), root)
        return _value(found, root, depth + 1) if isinstance(found, str) and "${" in found else found
    return REFERENCE.sub(lambda m: str(_value("${" + m.group(1) + "}", root, depth + 1)), text)


def _lookup(expression: str, root: dict[str, Any]) -> Any:
    if expression.startswith("oc.env:"):
        name, _, default = expression[len("oc.env:"):].partition(",")
        value = os.environ.get(name.strip())
        if value is None and not default:
            raise LookupError(f"environment variable {name.strip()} is not set")
        return value if value is not None else default.strip().strip("'\"")
    if ":" in expression:
        raise LookupError(f"resolver `{expression.split(':')[0]}` is not supported")
    node: Any = root
    for part in expression.split("."):
        if not isinstance(node, dict) or part not in node:
            raise MissingKey(f"${{{expression}}} refers to a key that is not in the config")
        node = node[part]
    return node


def env_references(tree: dict[str, Any]) -> dict[KeyPath, str]:
    """Every value that reads the environment, as written: `${oc.env:HF_TOKEN}`, `${oc.env:HOME}/data`, and
    `${trainer.x}` where trainer.x reads it.

    rlc writes these back as references, never as their values, so a secret in the environment stays out of every
    file it writes; the runtime resolves them from its own environment when it starts."""
    texts = dict(_strings(tree, ()))
    found = {path: text for path, text in texts.items() if "${oc.env:" in text.replace(" ", "")}
    while True:
        names = {".".join(map(str, path)) for path in found}
        more = {path: text for path, text in texts.items() if path not in found
                and any(m.group(1).strip() in names for m in REFERENCE.finditer(text))}
        if not more:
            return found
        found |= more


def _strings(node: Any, path: KeyPath) -> Iterator[tuple[KeyPath, str]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _strings(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _strings(value, (*path, index))
    elif isinstance(node, str):
        yield path, node
