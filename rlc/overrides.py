"""Hydra's override grammar as verl users write it: `a.b=v`, `+a.b=v`, `++a.b=v`, `~a.b`, `~a.b=v`.

One grammar serves `rlc convert`, `rlc validate --set` and `rlc launch --set`. It follows Hydra 1.3's lexer (the
tests compare against Hydra's own parser): `null`/`true`/`false` in any case, Hydra's number forms (`1e-6`, `.5`,
`1_000`, `inf`, `nan`; `007` stays a string), quoted strings with Hydra's backslash rules, lists, dicts, `key=` for
the empty string, and `${a.b}` interpolations kept verbatim. Where Hydra would fail or mean something rlc does
not do, the message says so: a top-level comma (a sweep), functions such as `choice(...)`, list indexing
(`a.0=x`), config groups (`a/b=x`, `@pkg`), an unquoted `=`. Other characters Hydra rejects in unquoted values
(non-ASCII letters, `~`, `#`) are taken literally: they have no other meaning here.

Shell variables are the one extension: override text comes after the shell, so a `$VAR`, `${VAR}` or
`${VAR:-default}` still in it is one the shell did not expand. It becomes the reference `${oc.env:VAR}`
(`${oc.env:VAR,default}`), resolved at launch on the machine that runs the job, or, with `expand_env=True`, is
replaced from `os.environ` before parsing, exactly as the shell would have done (so `$N` with N=5 is the int 5).
`\\$` is a literal dollar. Positional parameters (`$1`) and command substitution (`$(...)`) are errors: their
value is not knowable here.

Parsing keeps the value's text (`raw_value`) beside its parsed form so that a schema can re-type it (`coerce`):
`trainer.experiment_name=2024` stays the string "2024" because the field is a string. Dict keys are strings.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NoReturn

Op = Literal["set", "add", "force", "delete"]
_PREFIXES: tuple[tuple[str, Op], ...] = (("++", "force"), ("+", "add"), ("~", "delete"), ("", "set"))

KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*")
_INT_U = r"(?:0|[1-9](?:_?[0-9])*)"  # Hydra's INT_UNSIGNED: no leading zeros, `_` between digits
_DIGITS = r"[0-9](?:_?[0-9])*"
_POINT = rf"(?:{_INT_U}?\.{_DIGITS}|{_INT_U}\.)"
INT = re.compile(rf"[+-]?{_INT_U}")
FLOAT = re.compile(rf"[+-]?(?:(?:{_POINT}|{_INT_U})[eE][+-]?{_DIGITS}|{_POINT}|[iI][nN][fF]|[nN][aA][nN])")
_SHELL_FORM = re.compile(r"([A-Za-z_][A-Za-z0-9_]*|[0-9]+)(:-(.*))?", re.S)  # ${VAR}, ${VAR:-default}, ${1}
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ESCAPABLE = "\\()[]{}:=, \t$"  # Hydra's ESC characters, and `$`
MAX_DEPTH = 64  # nesting of lists/dicts in one value, as for YAML files (rlc.source)
_SAFE_WORD = re.compile(r"[A-Za-z0-9_./@%+*?|:\-]+")  # strings written without quotes by `format_value`


class OverrideError(ValueError):
    """One bad override: `str()` names it, says what is wrong and, when known, the column (1-based)."""

    def __init__(self, text: str, message: str, column: int | None = None) -> None:
        where = f" (column {column + 1})" if column is not None else ""
        super().__init__(f"override `{text}`: {message}{where}")
        self.text, self.reason, self.column = text, message, column


@dataclass(frozen=True)
class Override:
    op: Op
    path: tuple[str, ...]
    value: Any  # None/bool/int/float/str/list/dict; None for a `~key` without a value
    raw_value: str | None  # the value's text (after `expand_env`); None only for `~key`
    text: str  # the whole override as written

    @property
    def key(self) -> str:
        return ".".join(self.path)

    @property
    def has_value(self) -> bool:
        return self.raw_value is not None


def parse_overrides(texts: Iterable[str], expand_env: bool = False) -> list[Override]:
    return [parse_override(text, expand_env) for text in texts]


def parse_override(text: str, expand_env: bool = False) -> Override:
    op, start = _prefix(text)
    equals = text.find("=", start)
    path = _path(text, start, equals if equals >= 0 else len(text))
    if equals < 0:
        if op != "delete":
            raise OverrideError(text, f"expected `key=value` (or `~key` to delete); write `{text}=...`")
        return Override(op, path, None, None, text)
    raw = text[equals + 1:]
    if expand_env:
        expanded = _expand_env(text, raw)
        value = _Parser(text, text[:equals + 1] + expanded, equals + 1, exact=expanded == raw).value()
        return Override(op, path, value, expanded, text)
    return Override(op, path, _Parser(text, text, equals + 1).value(), raw, text)


def _prefix(text: str) -> tuple[Op, int]:
    sign, op = next(prefix for prefix in _PREFIXES if text.startswith(prefix[0]))
    start = len(sign)
    if text[start:start + 1] in ("+", "~"):
        raise OverrideError(text, "an override starts with one of `+`, `++` or `~`, not several", start)
    return op, start


def _path(text: str, start: int, end: int) -> tuple[str, ...]:
    key = text[start:end]
    if not text.strip():
        raise OverrideError(text, "the override is empty")
    if not key.strip():
        raise OverrideError(text, "the key is empty", start)
    column = start
    for part in key.split("."):
        if not KEY.fullmatch(part):
            raise OverrideError(text, _bad_key(part), column + (len(part) - len(part.lstrip())))
        column += len(part) + 1
    parts = tuple(key.split("."))
    if len(parts) > MAX_DEPTH:
        raise OverrideError(text, f"the key is {len(parts)} levels deep; a config is nested at most {MAX_DEPTH}")
    return parts


def _bad_key(part: str) -> str:
    if not part:
        return "an empty key segment (a key is `a.b.c`: no leading, trailing or double dots)"
    if part.isdigit():
        return f"list indexing (`.{part}`) is not supported; set the whole list, e.g. key=[a,b]"
    if "/" in part or "@" in part:
        return "config groups (`group/option`, `key@package`) are not supported; set keys with `a.b=value`"
    if part != part.strip():
        return "spaces are not allowed in a key"
    return f"`{part}` is not a valid key (keys are letters, digits, `_` and `-`, starting with a letter or `_`)"


def scalar(word: str) -> Any:
    """Hydra's typing of an unquoted word: null, booleans and numbers in Hydra's forms; anything else is text."""
    lowered = word.lower()
    if lowered in ("null", "true", "false"):
        return None if lowered == "null" else lowered == "true"
    return int(word) if INT.fullmatch(word) else float(word) if FLOAT.fullmatch(word) else word


class _DollarError(ValueError):
    pass


def _dollar(text: str, at: int) -> tuple[str, str, str | None, int]:
    """What the `$` at `text[at]` is: ("env", name, default, end), ("verbatim", text, None, end) or ("literal"...)."""
    nxt = text[at + 1:at + 2]
    if nxt == "{":
        end, depth = at + 2, 1
        while end < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[end], 0)
            end += 1
        if depth:
            raise _DollarError(f"`{text[at:at + 20]}` has no closing `}}`")
        inner = text[at + 2:end - 1]
        shell = _SHELL_FORM.fullmatch(inner)
        if shell and shell.group(1).isdigit():
            raise _DollarError(f"`${{{inner}}}` is a shell positional parameter; its value is not known here")
        if shell:
            return "env", shell.group(1), shell.group(3), end
        if not inner.strip():
            raise _DollarError("`${}` is empty")
        return "verbatim", text[at:end], None, end  # an OmegaConf reference such as ${trainer.project_name}
    name = _NAME.match(text, at + 1)
    if name:
        return "env", name.group(0), None, name.end()
    if nxt == "(":
        raise _DollarError(f"`{text[at:]}`: command substitution `$(...)` cannot be converted; write its value")
    if nxt and nxt in "0123456789@*#?!$":
        raise _DollarError(f"`${nxt}` is a shell parameter; its value is not known here")
    return "literal", "$", None, at + 1


def _env_reference(name: str, default: str | None) -> str:
    if default is None:
        return "${oc.env:" + name + "}"
    quote = "" if re.fullmatch(r"[\w./@+:\-]+", default) else "'" if "'" not in default else '"'
    return "${oc.env:" + name + "," + quote + default + quote + "}"


def _environ(text: str, name: str, default: str | None) -> str:
    value = os.environ.get(name)
    if default is not None and not value:  # ${VAR:-default}: the default when unset or empty
        value = default
    if value is None:
        raise OverrideError(text, f"environment variable {name} is not set (--expand-env)")
    return value.replace("$", "\\$")  # the shell does not expand a value twice


def _variables(text: str, literal: set[int], replace: Callable[[str, str | None], str]) -> tuple[str, bool]:
    """`text` with each shell variable replaced by `replace(name, default)`; and whether it had any `$` form.

    `literal`: positions of escaped `$`s, kept as they are. References like `${a.b}` are kept verbatim.
    """
    out, pos, found = [], 0, False
    while (at := text.find("$", pos)) >= 0:
        out.append(text[pos:at])
        if at in literal:
            out.append("$")
            pos = at + 1
            continue
        kind, name, default, pos = _dollar(text, at)
        if default is not None:  # the shell expands a default's own variables: `${X:-${HOME}/data}`
            default = _variables(default, set(), replace)[0]
        out.append(replace(name, default) if kind == "env" else name)
        found = True
    out.append(text[pos:])
    return "".join(out), found


def _expand_env(text: str, raw: str) -> str:
    """`raw` with shell variables replaced from the environment, as the shell would have done before Hydra."""
    escaped = {at for at in range(len(raw)) if raw[at] == "$" and (at - len(raw[:at].rstrip("\\"))) % 2}
    try:
        return _variables(raw, escaped, lambda name, default: _environ(text, name, default))[0]
    except _DollarError as err:
        raise OverrideError(text, str(err)) from None


class _Parser:
    """Recursive descent over one value; positions index the whole override, for columns in messages."""

    def __init__(self, source: str, text: str, start: int, exact: bool = True) -> None:
        self.source, self.text, self.pos, self.exact = source, text, start, exact
        self.depth = 0

    def fail(self, message: str, at: int | None = None) -> NoReturn:
        raise OverrideError(self.source, message, (self.pos if at is None else at) if self.exact else None)

    def peek(self) -> str:
        return self.text[self.pos:self.pos + 1]

    def space(self) -> None:
        while self.peek() in (" ", "\t"):
            self.pos += 1

    def value(self) -> Any:
        self.space()
        if not self.peek():
            return ""  # Hydra: `key=` sets the empty string
        value = self.element(top=True)
        self.space()
        if self.peek() == ",":
            self.fail("a comma outside brackets makes a Hydra sweep (several runs); write a list as [a,b], or quote "
                      "a string that has commas")
        if self.peek():
            self.fail(f"unexpected `{self.text[self.pos:]}` after the value; quote the whole value")
        return value

    def element(self, top: bool = False) -> Any:
        self.space()
        char = self.peek()
        if char in ("[", "{"):
            return self.container("]" if char == "[" else "}")
        if char in ("'", '"'):
            return self.quoted()
        return self.bare(top)

    def container(self, closer: str) -> Any:
        """`[a, b]` or `{k: v}`, the opening bracket at `pos`."""
        opened, items = self.pos, {} if closer == "}" else []
        self.depth += 1
        if self.depth > MAX_DEPTH:
            self.fail(f"lists and dicts nested more than {MAX_DEPTH} levels deep")
        self.pos += 1
        self.space()
        empty = self.peek() == closer
        while not empty:
            if isinstance(items, dict):
                self.item(items)
            elif self.peek() in (",", "]"):
                self.fail("an empty item in a list")
            else:
                items.append(self.element())
            self.space()
            if not self.peek():
                self.fail(f"missing `{closer}`: this `{self.text[opened]}` is never closed", opened)
            if self.peek() == closer:
                break
            if self.peek() != ",":
                self.fail(f"expected `,` or `{closer}`, found `{self.peek()}`")
            self.pos += 1
            self.space()
        self.pos += 1
        self.depth -= 1
        return items

    def item(self, items: dict[str, Any]) -> None:
        at = self.pos
        if self.peek() in ("'", '"'):
            key = self.quoted()
        else:
            raw = re.split(r"[:,\[\]{}'\"=()]", self.text[self.pos:], maxsplit=1)[0]
            key, self.pos = raw.strip(), self.pos + len(raw)
            if not key:
                self.fail("expected a key in a dict {key: value}")
        self.space()
        if self.peek() != ":":
            self.fail(f"expected `:` after the key `{key}` in a dict {{key: value}}")
        self.pos += 1
        self.space()
        if self.peek() in (",", "}", ""):
            self.fail(f"the key `{key}` has no value")
        if key in items:
            self.fail(f"the key `{key}` appears twice", at)
        items[key] = self.element()

    def quoted(self) -> str:
        """Hydra's quoted string: backslashes are literal except in a run before the quote (or `$`)."""
        quote, opened = self.peek(), self.pos
        out: list[str] = []
        literal: set[int] = set()
        self.pos += 1
        while True:
            char = self.peek()
            if not char:
                self.fail(f"unbalanced quote: this {quote} is never closed", opened)
            if char == "\\":
                run = len(self.text) - self.pos - len(self.text[self.pos:].lstrip("\\"))
                after = self.text[self.pos + run:self.pos + run + 1]
                special = after in (quote, "$", "")
                out.append("\\" * (run // 2 if special else run))
                self.pos += run
                if special and run % 2 and after:
                    literal.add(len("".join(out)))
                    out.append(after)
                    self.pos += 1
                continue
            self.pos += 1
            if char == quote:
                break
            out.append(char)
        text = "".join(out)
        try:
            return _variables(text, {i for i in literal if text[i:i + 1] == "$"}, _env_reference)[0]
        except _DollarError as err:
            self.fail(str(err), opened)

    def bare(self, top: bool) -> Any:
        start = self.pos
        out: list[str] = []
        literal: set[int] = set()
        keep, escaped = 0, False  # `keep`: length without trailing blanks (escaped ones count)
        stops = ",=" if top else ",=]}"
        while self.peek() and self.peek() not in stops:
            char = self.peek()
            if char == "\\" and self.text[self.pos + 1:self.pos + 2] and self.text[self.pos + 1] in _ESCAPABLE:
                if self.text[self.pos + 1] == "$":
                    literal.add(len(out))
                out.append(self.text[self.pos + 1])
                self.pos, keep, escaped = self.pos + 2, len(out), True
                continue
            if char == "$" and self.text[self.pos + 1:self.pos + 2] == "{":
                end = self.reference_end()
                out.extend(self.text[self.pos:end])
                self.pos, keep = end, len(out)
                continue
            self.reject(char, "".join(out))
            out.append(char)
            self.pos += 1
            keep = len(out) if char not in " \t" else keep
        if self.peek() == "=":
            self.fail("`=` in a value must be quoted (key='a=b') or escaped (key=a\\=b)")
        word = "".join(out[:keep])
        if not word and not top:
            self.fail("an empty item" if self.peek() in (",", "]", "") else f"unexpected `{self.peek()}`")
        try:
            text, had_dollar = _variables(word, literal, _env_reference)
        except _DollarError as err:
            self.fail(str(err), start)
        return text if escaped or had_dollar else scalar(word)

    def reference_end(self) -> int:
        depth, end = 0, self.pos + 1
        while end < len(self.text):
            depth += {"{": 1, "}": -1}.get(self.text[end], 0)
            end += 1
            if not depth:
                return end
        self.fail("`${` has no closing `}`")

    def reject(self, char: str, word: str) -> None:
        if char == "(" and word.endswith("$"):
            self.fail("command substitution `$(...)` cannot be converted; write its value", self.pos - 1)
        if char in ("'", '"'):
            self.fail(f"a quote inside an unquoted value: quote the whole value, e.g. key=\"a{char}b\"")
        if char == "(" and KEY.fullmatch(word.strip()):
            self.fail(f"`{word.strip()}(...)` is a Hydra function (a sweep or a cast), which rlc does not take; "
                      "quote the value to make it a string")
        if char in "()[{" or char == "]" or char == "}":
            self.fail(f"`{char}` must be quoted or escaped (\\{char}) inside a value")


def is_reference(value: Any) -> bool:
    """A whole-value `${...}`: it takes its type when resolved, so any field accepts it now."""
    return isinstance(value, str) and value.startswith("${") and value.endswith("}")


_KIND_WORDS = {"string": "a string", "integer": "an integer", "number": "a number", "boolean": "true or false",
               "array": "a list", "object": "a mapping", "null": "null"}


def coerce(override: Override, expected: str | Iterable[str]) -> Any:
    """The override's value typed for a field whose JSON Schema type(s) are `expected` ("any"/empty: as parsed).

    Only what the text leaves open is decided here: an unquoted `2024` or `true` for a string field is the text
    as written, an int for a number field is a float. A list or dict where the field takes neither (and a
    scalar where it takes only those) is an OverrideError; other scalar mismatches are left to schema validation.
    """
    kinds = {expected} if isinstance(expected, str) else set(expected)
    value = override.value
    if override.op == "delete" or not kinds or "any" in kinds or value is None or is_reference(value):
        return value
    takes = " or ".join(words for kind, words in _KIND_WORDS.items() if kind in kinds)
    if isinstance(value, list) and "array" not in kinds:
        raise OverrideError(override.text, f"a list cannot go into this field (it takes {takes})")
    if isinstance(value, dict) and "object" not in kinds:
        raise OverrideError(override.text, f"a mapping cannot go into this field (it takes {takes})")
    if isinstance(value, (list, dict)):
        return value
    if not kinds - {"array", "object"}:
        raise OverrideError(override.text, f"this field takes {takes}, e.g. `{override.key}=[...]`")
    if "string" in kinds and not isinstance(value, str) and not _fits(value, kinds):
        return (override.raw_value or "").strip()
    if isinstance(value, int) and not isinstance(value, bool) and "integer" not in kinds and "number" in kinds:
        return float(value)
    return value


def _fits(value: Any, kinds: set[str]) -> bool:
    kind = {bool: "boolean", int: "integer", float: "number"}.get(type(value))
    return kind in kinds or (kind == "integer" and "number" in kinds)


def to_override_text(path: str | Sequence[str], value: Any) -> str:
    """The inverse of `parse_override`: `key=text` that reads back to exactly `value` (NaN aside)."""
    parts = path.split(".") if isinstance(path, str) else list(path)
    key = ".".join(parts)
    for part in parts:
        if not KEY.fullmatch(part):
            raise OverrideError(f"{key}=...", _bad_key(part))
    return f"{key}={format_value(value)}"


def format_value(value: Any) -> str:
    """Override text for one value; strings are quoted when they would read back as anything else."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else "nan" if math.isnan(value) else "inf" if value > 0 else "-inf"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(format_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{_format_key(str(k))}:{format_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, str):
        return value if _SAFE_WORD.fullmatch(value) and scalar(value) == value else _quote(value)
    raise TypeError(f"cannot write a {type(value).__name__} as an override value")


def _format_key(key: str) -> str:
    plain = KEY.fullmatch(key) and key.lower() not in ("null", "true", "false", "inf", "nan")
    return key if plain else _quote(key)


def _quote(text: str) -> str:
    """Single-quoted, escaping what `_Parser.quoted` would read otherwise: quotes, `$` and backslash runs."""
    out, pos = [], 0
    while pos < len(text):
        char = text[pos]
        if char == "\\":
            run = len(text) - pos - len(text[pos:].lstrip("\\"))
            special = text[pos + run:pos + run + 1] in ("'", "$", "")
            out.append("\\" * (2 * run if special else run))
            pos += run
            continue
        out.append("\\'" if char == "'" else "\\$" if char == "$" and _is_variable(text, pos) else char)
        pos += 1
    return "'" + "".join(out) + "'"


def _is_variable(text: str, at: int) -> bool:
    """Whether the parser would read the `$` at `at` as a shell variable (or fail on it)."""
    try:
        return _dollar(text, at)[0] == "env"
    except _DollarError:
        return True
