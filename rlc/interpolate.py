"""OmegaConf-style references in config values, the forms verl's configs use.

`${a.b}` (absolute), `${.x}` / `${..x}` (relative to the mapping that holds the value, then its parent),
`${oc.select:key,default}` (the key's value, or the default when the key is absent) and `${oc.env:VAR,default}`.
They are resolved once, before anything else reads the tree. A value that is exactly one reference takes the
referenced value's type (an int stays an int); a reference inside a longer string is formatted into it.

Each key is resolved once and remembered, so a chain of values that repeat a reference (`${a}${a}` seven levels
deep) costs linear work. A key met again while it is still being resolved is a real reference cycle; anything
else that grows is stopped by two bounds (chain length, resolved length) and the message says it is a bound.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from typing import Any

from rlc.diagnostics import Diagnostic, KeyPath, dotted

REFERENCE = re.compile(r"\$\{([^{}]+)\}")  # an innermost `${...}`, for callers that only scan for references
MAX_CHAIN = 64  # keys resolved inside one another; verl's longest chain is 3
MAX_CHARS = 100_000  # characters of one resolved string value
MAX_NODES = 200_000  # values in the resolved tree (as rlc.source bounds aliases)
MISSING = "???"  # OmegaConf's mandatory value: the user must set it
ENVIRONMENT = re.compile(r"\$\{\s*oc\.env:.*\}", re.S)  # a value that is one environment reference


class MissingKey(LookupError):
    """The reference names a key the tree does not have (yet: a default may supply it later)."""


class Unresolvable(LookupError):
    """A reference that can never resolve: a cycle, a bound, an unknown resolver, an unset variable."""


class UnsetVariable(Unresolvable):
    """`${oc.env:VAR}` with no default and VAR unset here. Bash would pass verl an empty word; rlc cannot know the
    value the launching machine will have, so validation warns (code `env-unset`) and resolution refuses."""


UNSET_ENV = "env-unset"


def interpolate(tree: dict[str, Any], *, complete: bool = True) -> tuple[dict[str, Any], list[Diagnostic]]:
    """Resolve references. With `complete=False` (the user's partial tree) a reference to a key the user did not
    write is left for resolution to settle once defaults are explicit."""
    resolver = _Resolver(tree, complete)
    resolved = resolver.node(tree, ())
    if not resolver.problems and _expanded_size(resolved, MAX_NODES + 1) > MAX_NODES:
        # a reference to a section shares it rather than copying it, so only the expanded size can tell
        resolver.problems.append(Diagnostic(f"references expand the config to more than {MAX_NODES} values (an "
                                            "expansion bound, not a reference cycle)"))
    return resolved, resolver.problems


def _expanded_size(node: Any, budget: int) -> int:
    """How many values `node` holds when every shared section is counted each time; stops past `budget`."""
    count, stack = 0, [node]
    while stack and count < budget:
        item = stack.pop()
        count += 1
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return count


class _Resolver:
    def __init__(self, root: dict[str, Any], complete: bool) -> None:
        self.root, self.complete = root, complete
        self.problems: list[Diagnostic] = []
        self.done: dict[KeyPath, Any] = {}
        self.active: list[KeyPath] = []

    def node(self, value: Any, path: KeyPath) -> Any:
        """`value` (found at `path`) with every reference in it resolved; problems are collected, not raised."""
        if isinstance(value, dict):
            return {k: self.node(v, (*path, k)) for k, v in value.items()}
        if isinstance(value, list):
            return [self.node(v, (*path, i)) for i, v in enumerate(value)]
        if not (isinstance(value, str) and "${" in value):
            return value
        try:
            return self.key(path)
        except MissingKey as err:
            if self.complete:
                self.problems.append(Diagnostic(str(err), path, hint="references look like ${section.key}"))
        except UnsetVariable as err:
            self.problems.append(Diagnostic(f"{err}; `rlc launch` needs it", path, severity="warning",
                                            code=UNSET_ENV, hint="set it where rlc launches, or give a default: "
                                            "${oc.env:VAR,default} (a verl script run by bash would pass an empty "
                                            "value here)"))
        except LookupError as err:
            self.problems.append(Diagnostic(str(err), path, hint="references look like ${section.key}, ${.sibling}, "
                                            "${oc.select:key,default} or ${oc.env:VAR}"))
        return value

    def key(self, path: KeyPath) -> Any:
        """The resolved value of the key at `path`: remembered, so each key is resolved once."""
        if path in self.done:
            return self.done[path]
        if path in self.active:
            cycle = self.active[self.active.index(path):] + [path]
            raise Unresolvable("reference cycle: " + " -> ".join(dotted(p) or "(the whole config)" for p in cycle))
        if len(self.active) >= MAX_CHAIN:
            raise Unresolvable(f"references nest more than {MAX_CHAIN} keys deep (an expansion bound, not a cycle)")
        raw = _get(self.root, path)
        self.active.append(path)
        try:
            if isinstance(raw, (dict, list)):
                value = type(raw)(self._children(raw, path))
            else:
                value = self.text(raw, path) if isinstance(raw, str) and "${" in raw else raw
                if isinstance(raw, str) and isinstance(value, str) and ENVIRONMENT.fullmatch(raw.strip()):
                    value = _typed(value, path)
        finally:
            self.active.pop()
        self.done[path] = value
        return value

    def _children(self, raw: dict | list, path: KeyPath) -> Any:
        items = raw.items() if isinstance(raw, dict) else enumerate(raw)
        pairs = [(k, self.key((*path, k))) for k, _ in items]
        return pairs if isinstance(raw, dict) else [v for _, v in pairs]

    def text(self, text: str, path: KeyPath) -> Any:
        spans = _spans(text)
        if len(spans) == 1 and spans[0] == (0, len(text)):
            return self.reference(text[2:-1].strip(), path)
        out, last = [], 0
        for start, end in spans:
            out += [text[last:start], str(self.reference(text[start + 2:end - 1].strip(), path))]
            last = end
        joined = "".join([*out, text[last:]])
        if len(joined) > MAX_CHARS:
            raise Unresolvable(f"{text[:60]!r} expands to {len(joined)} characters; rlc stops at {MAX_CHARS} "
                               "(an expansion bound, not a reference cycle)")
        return joined

    def reference(self, expression: str, path: KeyPath) -> Any:
        if expression.startswith("oc.env:"):
            return self.environment(expression[len("oc.env:"):], path)
        if expression.startswith("oc.select:"):
            return self.select(_arguments(expression[len("oc.select:"):]), path)
        if ":" in expression:
            raise Unresolvable(f"resolver `{expression.split(':')[0]}` is not supported")
        target = _target(expression, path)
        if not _has(self.root, target):
            raise MissingKey(f"${{{expression}}} refers to a key that is not in the config")
        return self.key(target)

    def environment(self, arguments: str, path: KeyPath) -> Any:
        """`oc.env:VAR,default`: the variable, or the default, which may itself hold references (a shell script's
        `${X:-${HOME}/data}`), read only when the variable is unset."""
        name, _, default = arguments.partition(",")
        value = os.environ.get(name.strip())
        if value is not None:
            return value
        if not default:
            raise UnsetVariable(f"environment variable {name.strip()} is not set here")
        default = default.strip()
        if len(default) > 1 and default[0] == default[-1] and default[0] in "'\"":
            default = default[1:-1]
        return self.text(default, path) if "${" in default else default

    def select(self, arguments: list[str], path: KeyPath) -> Any:
        """`oc.select:key,default`: the key's value, or the default (null when not given) when the key is absent.
        The default may itself be a reference (`${oc.select:a,${oc.select:b,null}}`)."""
        target = _target(arguments[0], path)
        if _has(self.root, target) and _get(self.root, target) != MISSING:
            return self.key(target)
        if len(arguments) < 2:
            return None
        default = arguments[1]
        return self.text(default, path) if "${" in default else _literal(default)


def _spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each outermost `${...}` in `text`, braces matched so that references nest."""
    spans, at = [], text.find("${")
    while at >= 0:
        depth, end = 0, at + 1
        while end < len(text):
            depth += {"{": 1, "}": -1}.get(text[end], 0)
            end += 1
            if depth == 0:
                break
        if depth:
            raise Unresolvable(f"`{text[at:at + 40]}` has no closing `}}`")
        spans.append((at, end))
        at = text.find("${", end)
    return spans


def _arguments(text: str) -> list[str]:
    """A resolver's arguments: split at commas outside brackets, braces and quotes; each stripped."""
    parts, depth, quote, current = [], 0, "", []
    for char in text:
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append("".join(current).strip())
            current = []
            continue
        current.append(char)
    return [*parts, "".join(current).strip()]


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
    if fits == "integer" and "integer" not in kinds and "number" in kinds:
        return float(typed)
    return typed if fits in kinds or (fits == "integer" and "number" in kinds) else text


def _literal(text: str) -> Any:
    """A resolver's default argument, typed as OmegaConf's grammar types it (`null`, `1`, `true`, `[]`, 'a')."""
    from rlc.overrides import OverrideError, parse_override

    try:
        return parse_override("default=" + text.strip()).value
    except OverrideError as err:
        raise Unresolvable(f"cannot read the default {text.strip()!r}: {err.reason}") from None


def _target(expression: str, path: KeyPath) -> KeyPath:
    """The key path that `expression` names, from the value at `path` (leading dots: relative, as OmegaConf)."""
    dots = len(expression) - len(expression.lstrip("."))
    parts = tuple(p for p in expression[dots:].split(".") if p) if expression[dots:] else ()
    if not dots and not parts:
        raise Unresolvable("an empty reference `${}` names no key")
    if not dots:
        return parts
    if dots > len(path):
        raise Unresolvable(f"${{{expression}}} climbs above the top of the config")
    return (*path[:len(path) - dots], *parts)


def _has(root: Any, path: KeyPath) -> bool:
    try:
        _get(root, path)
    except KeyError:
        return False
    return True


def _get(root: Any, path: KeyPath) -> Any:
    node = root
    for part in path:
        if isinstance(node, list) and isinstance(part, str) and part.isdigit():
            part = int(part)  # `${a.0}`: OmegaConf's list index
        listed = isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        if listed or isinstance(node, dict) and part in node:
            node = node[part]
        else:
            raise KeyError(part)
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
