"""Hydra's override grammar as verl users write it: `a.b=v`, `+a.b=v`, `++a.b=v`, `~a.b`, and typed values.

One grammar serves `rlc convert`, `rlc validate --set` and `rlc launch --set`. Parsing keeps the value's text
(`raw_value`) beside its parsed form, so that a schema can re-type it: `trainer.experiment_name=2024` stays the
string "2024" because the field is a string, while `data.train_batch_size=2024` becomes an int.
Shell variables (`$VAR`, `${VAR}`) are kept as `${oc.env:VAR}` references unless `expand_env` asks to expand
them; OmegaConf references such as `${trainer.project_name}` are kept verbatim.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

Op = Literal["set", "add", "force", "delete"]
KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*")
NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
SHELL_VAR = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")


class OverrideError(ValueError):
    def __init__(self, text: str, message: str, column: int | None = None) -> None:
        where = f" (column {column + 1})" if column is not None else ""
        super().__init__(f"override `{text}`: {message}{where}")
        self.text, self.reason, self.column = text, message, column


@dataclass(frozen=True)
class Override:
    op: Op
    path: tuple[str, ...]
    value: Any
    raw_value: str | None
    text: str

    @property
    def key(self) -> str:
        return ".".join(self.path)


def parse_overrides(texts: Iterable[str], expand_env: bool = False) -> list[Override]:
    return [parse_override(t, expand_env) for t in texts]


def parse_override(text: str, expand_env: bool = False) -> Override:
    body, op = _prefix(text)
    key_text, has_value, raw = body.partition("=")
    path = _path(text, key_text.strip(), len(text) - len(body))
    if op == "delete":
        value = _Value(text, raw, expand_env).parse() if has_value else None
        return Override(op, path, value, raw if has_value else None, text)
    if not has_value:
        raise OverrideError(text, "expected `key=value` (or `~key` to delete)")
    value = _Value(text, raw, expand_env).parse()
    return Override(op, path, value, raw, text)


def _prefix(text: str) -> tuple[str, Op]:
    if text.startswith("++"):
        return text[2:], "force"
    if text.startswith("+"):
        return text[1:], "add"
    if text.startswith("~"):
        return text[1:], "delete"
    return text, "set"


def _path(text: str, key: str, offset: int) -> tuple[str, ...]:
    if not key:
        raise OverrideError(text, "the key is empty", offset)
    parts = key.split(".")
    column = offset
    for part in parts:
        if not KEY.fullmatch(part):
            what = "an empty key segment" if not part else f"`{part}` is not a valid key"
            raise OverrideError(text, what, column)
        column += len(part) + 1
    return tuple(parts)


class _Value:
    """A small recursive-descent parser over one value's text."""

    def __init__(self, text: str, raw: str, expand_env: bool) -> None:
        self.text, self.raw, self.expand_env, self.pos = text, raw, expand_env, 0

    def parse(self) -> Any:
        value = self.element(top=True)
        if self.pos != len(self.raw):
            self.fail(f"unexpected `{self.raw[self.pos:]}`")
        return value

    def fail(self, message: str) -> None:
        raise OverrideError(self.text, message, len(self.text) - len(self.raw) + self.pos)

    def skip_space(self) -> None:
        while self.pos < len(self.raw) and self.raw[self.pos] in " \t":
            self.pos += 1

    def element(self, top: bool = False) -> Any:
        self.skip_space()
        char = self.raw[self.pos] if self.pos < len(self.raw) else ""
        if char == "[":
            return self.sequence("[", "]", self.element)
        if char == "{":
            return dict(self.sequence("{", "}", self.item))
        if char in "'\"":
            return self.quoted(char)
        return self.bare(top)

    def sequence(self, open_: str, close: str, read: Any) -> list[Any]:
        self.pos += 1
        items: list[Any] = []
        self.skip_space()
        if self.raw[self.pos:self.pos + 1] == close:
            self.pos += 1
            return items
        while True:
            items.append(read())
            self.skip_space()
            char = self.raw[self.pos:self.pos + 1]
            self.pos += 1
            if char == close:
                return items
            if char != ",":
                self.pos -= 1
                self.fail(f"expected `,` or `{close}`" if char else f"missing `{close}`")

    def item(self) -> tuple[str, Any]:
        self.skip_space()
        match = KEY.match(self.raw, self.pos)
        if not match:
            self.fail("expected a key in `{key: value}`")
        self.pos = match.end()
        self.skip_space()
        if self.raw[self.pos:self.pos + 1] != ":":
            self.fail("expected `:` after the key")
        self.pos += 1
        return match.group(0), self.element()

    def quoted(self, quote: str) -> str:
        end = self.pos + 1
        out = []
        while end < len(self.raw) and self.raw[end] != quote:
            if self.raw[end] == "\\" and end + 1 < len(self.raw) and self.raw[end + 1] in (quote, "\\"):
                end += 1
            out.append(self.raw[end])
            end += 1
        if end >= len(self.raw):
            self.fail(f"unbalanced quote {quote}")
        self.pos = end + 1
        return self.env("".join(out))

    def bare(self, top: bool) -> Any:
        stops = "" if top else ",]}"
        start = self.pos
        depth = 0
        while self.pos < len(self.raw):
            char = self.raw[self.pos]
            if char == "$" and self.raw[self.pos + 1:self.pos + 2] == "{":
                depth += 1
            elif char == "}" and depth:
                depth -= 1
            elif char in stops and not depth:
                break
            elif char in "'\"[" and not top:
                self.fail(f"unexpected `{char}` inside a value")
            self.pos += 1
        word = self.raw[start:self.pos].strip()
        return scalar(word, self)

    def env(self, text: str) -> str:
        def replace(match: re.Match[str]) -> str:
            name = match.group(1) or match.group(2)
            if text[match.start():].startswith("${") and ":" in text[match.start():].split("}", 1)[0]:
                return match.group(0)
            if not self.expand_env:
                return "${oc.env:" + name + "}"
            if name not in os.environ:
                raise OverrideError(self.text, f"environment variable {name} is not set (--expand-env)")
            return os.environ[name]

        if "$" not in text:
            return text
        return _expand_shell(text, replace)


def _expand_shell(text: str, replace: Any) -> str:
    """Replace `$VAR`/`${VAR}`, leaving `${a.b}` and `${oc.env:X}` references as they are."""
    out, pos = [], 0
    for match in SHELL_VAR.finditer(text):
        out.append(text[pos:match.start()])
        pos = match.end()
        is_reference = match.group(0).startswith("${") and "." in match.group(0)
        out.append(match.group(0) if is_reference else replace(match))
    out.append(text[pos:])
    return "".join(out)


def scalar(word: str, parser: _Value | None = None) -> Any:
    lowered = word.lower()
    if lowered in ("null", "~", "none") or word == "":
        return None
    if lowered == "true":
        return True
    if lowered == "false":
        return False
    if lowered in ("inf", "+inf", "-inf", "nan"):
        return float(lowered)
    if NUMBER.fullmatch(word):
        return int(word) if re.fullmatch(r"[+-]?\d+", word) else float(word)
    return parser.env(word) if parser else word


JSON_TYPES = ("string", "integer", "number", "boolean", "array", "object", "null")


def coerce(override: Override, expected: set[str]) -> Any:
    """The override's value typed for a field whose JSON Schema types are `expected`."""
    value = override.value
    if not expected or value is None:
        return value
    raw = (override.raw_value or "").strip()
    quoted = raw[:1] in ("'", '"')
    if "string" in expected and not isinstance(value, (list, dict)) and not quoted and not _fits(value, expected):
        return raw if not raw.startswith("$") else value
    if isinstance(value, list) and "array" not in expected:
        raise OverrideError(override.text, f"a list cannot go into this field (it takes {_words(expected)})")
    if isinstance(value, dict) and "object" not in expected:
        raise OverrideError(override.text, f"a mapping cannot go into this field (it takes {_words(expected)})")
    if isinstance(value, int) and not isinstance(value, bool) and "integer" not in expected and "number" in expected:
        return float(value)
    return value


def _fits(value: Any, expected: set[str]) -> bool:
    kinds = {bool: "boolean", int: "integer", float: "number", str: "string"}
    kind = kinds.get(type(value))
    return kind in expected or (kind == "integer" and "number" in expected)


def _words(expected: set[str]) -> str:
    return " or ".join(sorted(expected))


def to_override_text(path: Iterable[str], value: Any) -> str:
    """The inverse of `parse_override`: text that reads back to exactly `value`."""
    return f"{'.'.join(path)}={format_value(value)}"


def format_value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ("nan" if math.isnan(value) else
                                                         ("inf" if value > 0 else "-inf"))
    if isinstance(value, list):
        return "[" + ",".join(format_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{format_value(v)}" for k, v in value.items()) + "}"
    text = str(value)
    if text and scalar(text) == text and not re.search(r"[\s,\[\]{}'\"$\\=:#]", text) and text[0] not in "+~":
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"
