"""Problems found in a config, each tied to a place in the user's text.

Every stage of the compiler reports through `Diagnostic` instead of raising, so that one run lists every problem
(with file:line:col) and the CLI decides how to print them. `CompileError` carries a batch of them out of a stage
that cannot go on.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Literal

Severity = Literal["error", "warning", "note"]
KeyPath = tuple[str | int, ...]


@dataclass(frozen=True)
class Position:
    file: str
    line: int  # 1-based
    col: int  # 1-based


@dataclass(frozen=True)
class Diagnostic:
    message: str
    path: KeyPath = ()
    position: Position | None = None
    hint: str | None = None
    severity: Severity = "error"
    code: str | None = None  # a stable name for the kind of problem, e.g. "unknown-key"
    quote: str | None = None  # the offending line of the file, shown under the message with a caret


    @property
    def dotted(self) -> str:
        return dotted(self.path)

    def format(self) -> str:
        where = ""
        if self.position:  # line 0: not from a file (an override on the command line)
            pos = self.position
            where = f"{pos.file}:{pos.line}:{pos.col}: " if pos.line else f"{pos.file}: "
        key = f"{self.dotted}: " if self.path else ""
        text = f"{where}{self.severity}: {key}{self.message}"
        if self.quote is not None:
            line, caret = _excerpt(self.quote, self.position.col if self.position else 1)
            text += f"\n    | {line}\n    | {' ' * caret}^"
        return f"{text}\n    hint: {self.hint}" if self.hint else text

    def to_json(self) -> dict:
        data = asdict(self)
        data["path"] = self.dotted
        return data


@dataclass
class CompileError(Exception):
    """A stage stopped; `diagnostics` says why (at least one of them is an error)."""

    diagnostics: list[Diagnostic] = field(default_factory=list)

    def __str__(self) -> str:
        return "\n".join(d.format() for d in self.diagnostics)


def _excerpt(line: str, col: int, width: int = 100) -> tuple[str, int]:
    """At most `width` characters of `line` around column `col` (1-based), and the caret's offset in them."""
    start = max(0, min(col - 1 - width // 2, len(line) - width))
    prefix = "…" if start else ""
    suffix = "…" if start + width < len(line) else ""
    return prefix + line[start:start + width] + suffix, len(prefix) + col - 1 - start


def dotted(path: Iterable[str | int]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def has_errors(diagnostics: Iterable[Diagnostic]) -> bool:
    return any(d.severity == "error" for d in diagnostics)


def render(diagnostics: list[Diagnostic], fmt: Literal["text", "json"] = "text") -> str:
    if fmt == "json":
        return json.dumps([d.to_json() for d in diagnostics], indent=2)
    return "\n".join(d.format() for d in diagnostics)
