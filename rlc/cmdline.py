"""Legacy command lines and scripts -> the override texts they pass to verl.

Shell rules are shlex's (POSIX quoting, `#` comments); on top of that we find the one command that runs verl
(`python3 -m verl.trainer.main_ppo`, `verl train-ppo`, `torchrun ... -m verl...`, `ray job submit ... -- python ...`)
and keep its `a.b=c` arguments. Environment assignments in front of it and `export`s before it are recorded, not
applied; other lines of a script are ignored with a note.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field

ENTRY_POINTS = re.compile(r"(verl\.trainer\.main_ppo|main_ppo(\.py)?|verl\.trainer\.main_generation|train-ppo)$")
ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")
OVERRIDE = re.compile(r"^(\+\+|\+|~)?[A-Za-z_][A-Za-z0-9_\-]*(\.[A-Za-z0-9_\-]*)*(=|$)")


class CmdlineError(ValueError):
    pass


@dataclass
class CommandLine:
    overrides: list[str]
    env: dict[str, str] = field(default_factory=dict)
    program: str | None = None
    notes: list[str] = field(default_factory=list)


def split_command_line(text: str) -> CommandLine:
    """The verl command in `text` (a command line or a whole script) as override texts."""
    commands = _commands(text)
    env: dict[str, str] = {}
    notes: list[str] = []
    chosen: list[str] | None = None
    for words in commands:
        if words[0] == "export":
            env.update(_assignments(words[1:]))
            continue
        start = _program_start(words)
        if start is None:
            if chosen is None and all(OVERRIDE.match(w) and "=" in w or w.startswith("~") for w in words):
                chosen, program = words, None  # bare overrides, no program in front
            else:
                notes.append(f"ignored: {' '.join(words)[:80]}")
            continue
        if chosen is not None:
            notes.append(f"ignored a second verl command: {' '.join(words)[:80]}")
            continue
        env.update(_assignments(words[:_first_non_assignment(words)]))
        program, chosen = " ".join(words[_first_non_assignment(words):start]), words[start:]
    if chosen is None:
        raise CmdlineError("no verl command and no `key=value` overrides found")
    overrides = []
    for word in chosen:
        if word in ("$@", '"$@"'):
            notes.append("ignored `$@` (the script's own arguments)")
        elif word.startswith("--"):
            notes.append(f"ignored option {word}")
        elif OVERRIDE.match(word):
            overrides.append(word)
        else:
            raise CmdlineError(f"`{word}` is neither a `key=value` override nor a known option")
    return CommandLine(overrides, env, program, notes)


def _commands(text: str) -> list[list[str]]:
    """Shell words per command: backslash-newlines join lines, and a quote left open continues on the next line."""
    out, pending = [], ""
    for line in re.sub(r"\\\r?\n", " ", text).splitlines(keepends=True):
        pending += line
        try:
            words = shlex.split(pending, comments=True, posix=True)
        except ValueError:
            continue  # an open quote: the value goes on over the newline
        pending = ""
        out += [command for command in _split_on(words, {";", "&&", "||"}) if command]
    if pending.strip():
        raise CmdlineError(f"unbalanced quotes in `{pending.strip()[:80]}`")
    return out


def _split_on(words: list[str], separators: set[str]) -> list[list[str]]:
    parts: list[list[str]] = [[]]
    for word in words:
        if word in separators:
            parts.append([])
        else:
            parts[-1].append(word)
    return parts


def _program_start(words: list[str]) -> int | None:
    """Index of the first argument after the verl entry point, or None if `words` does not run verl."""
    for index, word in enumerate(words):
        if ENTRY_POINTS.search(word):
            return index + 1
    return None


def _first_non_assignment(words: list[str]) -> int:
    index = 0
    while index < len(words) and ASSIGNMENT.match(words[index]):
        index += 1
    return index


def _assignments(words: list[str]) -> dict[str, str]:
    return dict(w.split("=", 1) for w in words if ASSIGNMENT.match(w))
