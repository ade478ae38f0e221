"""Legacy command lines and shell scripts -> the override texts that the verl command in them receives.

What verl receives is what the shell made of the script, so this module reads it as the shell does: POSIX quoting,
backslash-newline continuations, `#` comments at the start of a word, `;`/`&&`/`|`/`&`/newline between commands,
redirections (`> log 2>&1`) dropped, and the script's own variables (`MODEL=...`, `export DATA=...`) substituted
where the shell would substitute them (not inside single quotes; unquoted values split on blanks). shlex cannot do
this: it forgets which text was single-quoted and knows nothing of variables, and verl's example scripts build
their lists in variables (`train_files="['$gsm8k_train', '$math_train']"`).

A variable the script does not set stays `$VAR` in the override, which `rlc.overrides` reads as the environment
reference `${oc.env:VAR}`; a `$` the shell would not expand is passed on as `\\$`, the grammar's literal dollar.

The verl command is the first one that runs `verl.trainer.main_ppo` (or another `verl.` module, a `main_ppo` module
or script, or `verl train-ppo`), whatever launches it (`python3 -m`, `torchrun`, `ray job submit -- ...`, `nohup`).
Environment assignments in front of it and `export`s before it are recorded in `env`. Text without such a command
is taken as bare overrides when every word has an `=`. Everything else is ignored with a note.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import NoReturn

ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")
_VERL_MODULE = re.compile(r"verl(\.[\w]+)+|([\w]+\.)*main_ppo")
_SHELL_PARAMETER = re.compile(r"\$(\{([A-Za-z_][A-Za-z0-9_]*|[0-9]+)(:-([^}]*))?\}|[A-Za-z_][A-Za-z0-9_]*)")
_SCRIPT_ARGUMENTS = {"$@", "$*", "${@}", "${*}"}
_OPERATORS = ("&&", "||", ";;", "|&", ";", "|", "&")
_REDIRECTIONS = ("<<<", "<<-", "<<", ">>", ">&", ">|", "&>>", "&>", "<&", "<>", ">", "<")
# Hydra's options after the entry point (and ii_verl's `verl train-ppo --config_path/--backend`): noted, not used.
_VALUE_OPTIONS = {"--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd", "--cfg", "-c", "--package",
                  "-p", "--experimental-rerun", "--config_path", "--backend"}
_FLAG_OPTIONS = {"--multirun", "-m", "--resolve", "--info", "--help", "-h", "--hydra-help", "--version", "--run",
                 "-r", "--shell-completion", "-sc"}


class CmdlineError(ValueError):
    pass


@dataclass
class CommandLine:
    overrides: list[str]
    env: dict[str, str] = field(default_factory=dict)  # exports and `VAR=x` in front of the verl command
    program: str | None = None  # e.g. "torchrun --nproc_per_node=8 -m verl.trainer.main_ppo"; None: bare overrides
    notes: list[str] = field(default_factory=list)


@dataclass
class _Command:
    line: int
    words: list[str]

    def show(self) -> str:
        text = " ".join(self.words)
        return text if len(text) <= 80 else text[:77] + "..."


def split_command_line(text: str) -> CommandLine:
    """The verl command in `text` (a command line or a whole script) as override texts."""
    variables: dict[str, str] = {}
    env: dict[str, str] = {}
    notes: list[str] = []
    chosen: tuple[_Command, int] | None = None
    loose: list[_Command] = []  # lines of bare overrides
    for command in _Lexer(text, variables, notes).commands():
        words, lead = command.words, _count_assignments(command.words)
        entry = _entry_point(words, lead)
        if words[0] == "export":
            _export(words[1:], variables, env)
        elif lead == len(words):
            variables.update(_assignments(words))
        elif entry is not None and chosen is None:
            chosen = command, entry
            env.update({k: _unescape(v) for k, v in _assignments(words[:lead]).items()})
        elif entry is not None:
            notes.append(f"line {command.line}: ignored a second verl command `{command.show()}`")
        elif all("=" in w or w in _SCRIPT_ARGUMENTS or w.startswith("~") for w in words):
            loose.append(command)
        else:
            notes.append(f"line {command.line}: ignored `{command.show()}`")
    if chosen is None:
        if not loose:
            seen = f"; ignored: {'; '.join(notes)}" if notes else ""
            raise CmdlineError("found no verl command (such as `python3 -m verl.trainer.main_ppo ...`) and no "
                               f"`key=value` overrides{seen}")
        overrides = [o for c in loose for o in _arguments(c.words, "the command line", c.line, notes)]
        return CommandLine(overrides, env, None, notes)
    for command in loose:
        if set(command.words) <= _SCRIPT_ARGUMENTS:
            notes.append(f"line {command.line}: ignored `{command.show()}` (the script's own arguments)")
            continue
        notes.append(f"line {command.line}: `{command.show()}` is not part of the verl command (did a comment or "
                     "a missing `\\` end it?); ignored")
    command, entry = chosen
    lead = _count_assignments(command.words)
    program = " ".join(command.words[lead:entry + 1])
    options = [w for w in command.words[lead + 1:entry] if w.startswith("-") and w not in ("-m", "--module", "--")]
    if options:
        notes.append(f"launcher options {' '.join(options)} are not part of the config; rlc launch sets its own")
    return CommandLine(_arguments(command.words[entry + 1:], program, command.line, notes), env, program, notes)


def _entry_point(words: list[str], start: int) -> int | None:
    """Index of the word that names verl's entry point, or None when `words` does not run verl."""
    for index in range(start, len(words)):
        word, before = words[index], words[index - 1] if index > start else ""
        if before in ("-m", "--module") and _VERL_MODULE.fullmatch(word):
            return index
        if re.search(r"(^|/)main_ppo\.py$", word) or (word == "train-ppo" and re.search(r"(^|/)verl$", before)):
            return index
    return None


def _arguments(words: list[str], program: str, line: int, notes: list[str]) -> list[str]:
    overrides: list[str] = []
    index = 0
    while index < len(words):
        word = words[index]
        index += 1
        if word in _SCRIPT_ARGUMENTS:
            notes.append(f"ignored `{word}` (the script's own arguments; give them to rlc with --set)")
        elif word.startswith("-"):
            name, _, value = word.partition("=")
            if name in _VALUE_OPTIONS and not value:
                if index >= len(words):
                    raise CmdlineError(f"line {line}: option `{name}` of {program} has no value")
                value, index = words[index], index + 1
            if name not in _VALUE_OPTIONS | _FLAG_OPTIONS:
                raise CmdlineError(f"line {line}: `{word}` is not an option rlc knows for {program}")
            notes.append(_option_note(name, value))
        elif "=" in word or word.startswith("~"):
            overrides.append(word)
        elif program.endswith("train-ppo") and not overrides:
            notes.append(f"`{word}`: the config file of `verl train-ppo` is not read here")
        elif not word:
            raise CmdlineError(f"line {line}: an empty argument (`\"\"`) is not an override")
        elif word.isspace():
            raise CmdlineError(f"line {line}: a `\\` followed by a space instead of the end of the line passes "
                               f"`{word}` to {program}; remove the space after the `\\`")
        elif word.startswith("$("):
            raise CmdlineError(f"line {line}: `{word}` is a command substitution; rlc cannot run it: write its "
                               "output instead")
        else:
            raise CmdlineError(f"line {line}: `{word}` is neither a `key=value` override nor an option of {program}")
    return overrides


def _option_note(name: str, value: str) -> str:
    if name in ("--multirun", "-m"):
        return f"ignored `{name}`: rlc converts a single run"
    if name in ("--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd", "--config_path"):
        return f"`{name} {value}`: that base config is not read; only the overrides are converted"
    return f"ignored option `{name}{' ' + value if value else ''}`"


def _count_assignments(words: list[str]) -> int:
    count = 0
    while count < len(words) and ASSIGNMENT.match(words[count]):
        count += 1
    return count


def _assignments(words: list[str]) -> dict[str, str]:
    return dict(w.split("=", 1) for w in words if ASSIGNMENT.match(w))


def _export(words: list[str], variables: dict[str, str], env: dict[str, str]) -> None:
    for word in words:
        if ASSIGNMENT.match(word):
            name, value = word.split("=", 1)
            variables[name] = value
            env[name] = _unescape(value)
        elif word in variables:
            env[word] = _unescape(variables[word])


def _substitution_end(text: str, at: int) -> int:
    """The end of the `$(...)` or backquoted command at `at` (quotes and nesting respected); -1 if never closed."""
    if text[at] == "`":
        match = re.compile(r"(\\.|[^`\\])*`", re.S).match(text, at + 1)
        return match.end() if match else -1
    pos, depth = at + 2, 1
    while pos < len(text) and depth:
        char = text[pos]
        if text.startswith("$(", pos) or char == "`":
            pos = _substitution_end(text, pos)
        elif char == "'":
            pos = text.find("'", pos + 1) + 1
        elif char == '"':
            pos = _double_quote_end(text, pos)
        else:
            depth += {"(": 1, ")": -1}.get(char, 0)
            pos += 2 if char == "\\" else 1
        if pos <= 0:
            return -1
    return pos if not depth else -1


def _double_quote_end(text: str, at: int) -> int:
    pos = at + 1
    while 0 < pos < len(text) and text[pos] != '"':
        if text.startswith("$(", pos) or text[pos] == "`":
            pos = _substitution_end(text, pos)
        else:
            pos += 2 if text[pos] == "\\" else 1
    return pos + 1 if 0 < pos < len(text) else -1


def _unescape(value: str) -> str:
    return value.replace("\\$", "$")


class _Lexer:
    """POSIX shell words, command by command, with the script's variables substituted as the shell would."""

    def __init__(self, text: str, variables: dict[str, str], notes: list[str]) -> None:
        self.text = text.replace("\r\n", "\n")
        self.variables, self.notes = variables, notes
        self.pos, self.start = 0, 0  # `start`: where the current command's first word began
        self.words: list[str] = []
        self.word: list[str] = []
        self.started = False  # a word is open (even an empty one: `""`)
        self.heredocs: list[tuple[str, bool]] = []  # (delimiter, strip tabs) opened on the current line

    @property
    def line(self) -> int:
        return self.text.count("\n", 0, self.pos) + 1

    def fail(self, message: str) -> NoReturn:
        raise CmdlineError(f"line {self.line}: {message}")

    def snippet(self, start: int) -> str:
        return self.text[start:start + 30].split("\n")[0]

    def peek(self, size: int = 1) -> str:
        return self.text[self.pos:self.pos + size]

    def commands(self) -> Iterator[_Command]:
        """Commands one at a time: the caller records a command's assignments before the next one is read."""
        while self.pos < len(self.text):
            if self.step() or self.pos >= len(self.text):
                self.end_word()
                if self.words:
                    yield _Command(self.text.count("\n", 0, self.start) + 1, self.words)
                self.words = []

    def end_word(self) -> None:
        if self.started:
            self.words.append("".join(self.word))
        self.word, self.started = [], False

    def add(self, text: str) -> None:
        if not self.words and not self.started:
            self.start = self.pos
        self.word.append(text)
        self.started = True

    def add_literal(self, text: str) -> None:
        """Text the shell passes on unexpanded: its `$`s are marked literal for the grammar (`\\$`)."""
        for piece in re.split(r"(\$)", text):
            if piece == "$":
                before = "".join(self.word)
                piece = "$" if (len(before) - len(before.rstrip("\\"))) % 2 else "\\$"
            self.add(piece)

    def step(self) -> bool:
        """Read one unit of text (a character, a quoted string, an expansion); True when it ended a command."""
        char = self.peek()
        if char == "\\":
            following = self.peek(2)[1:]
            self.pos += 2
            if following != "\n":  # backslash-newline: the command goes on
                self.add_literal(following or "\\")
        elif char in " \t\n":
            self.end_word()
            self.pos += 1
            if char == "\n" and self.heredocs:
                self.skip_heredocs()
            return char == "\n"
        elif char == "#" and not self.started:
            end = self.text.find("\n", self.pos)
            self.pos = len(self.text) if end < 0 else end
        elif char == "'":
            end = self.text.find("'", self.pos + 1)
            if end < 0:
                self.fail(f"unbalanced quote: the ' before `{self.snippet(self.pos + 1)}` is never closed")
            self.add_literal(self.text[self.pos + 1:end])
            self.pos = end + 1
        elif char == '"':
            self.double_quoted()
        elif char == "$":
            self.dollar(quoted=False)
        elif char == "`":
            self.substitution()
        elif char in "<>" or self.peek(2) == "&>":
            self.redirection()
        elif char in ";&|()":
            self.end_word()
            self.pos += next(len(op) for op in (*_OPERATORS, char) if self.text.startswith(op, self.pos))
            return True
        else:
            self.add(char)
            self.pos += 1
        return False

    def double_quoted(self) -> None:
        self.add("")
        start, self.pos = self.pos, self.pos + 1
        while (char := self.peek()) != '"':
            if not char:
                self.fail(f'unbalanced quote: the " before `{self.snippet(start + 1)}` is never closed')
            if char == "\\" and self.peek(2)[1:] in ("$", "`", '"', "\\", "\n"):
                self.add_literal(self.peek(2)[1].strip("\n"))
                self.pos += 2
            elif char == "$":
                self.dollar(quoted=True)
            elif char == "`":
                self.substitution()
            else:
                self.add(char)
                self.pos += 1
        self.pos += 1

    def substitution(self) -> None:
        """`$(...)` or a backquoted command, kept as `$(...)`: the grammar refuses it if the verl command has it."""
        end = _substitution_end(self.text, self.pos)
        if end < 0:
            self.fail(f"command substitution `{self.snippet(self.pos)}` is never closed")
        inner = self.text[self.pos + 1:end - 1] if self.peek() == "`" else self.text[self.pos + 2:end - 1]
        self.add(f"$({inner})")
        self.pos = end

    def dollar(self, quoted: bool) -> None:
        if self.peek(2) == "$(":
            return self.substitution()
        match = _SHELL_PARAMETER.match(self.text, self.pos)
        if not match:  # `$@`, `$1`, `${a.b}`, a lone `$`: left for the override grammar to read or refuse
            end = self.pos + 1
            if self.peek(2) == "${":
                end = self.text.find("}", self.pos) + 1 or len(self.text)
            elif self.peek(2)[1:] and self.peek(2)[1] in "@*#?$!-0123456789":
                end = self.pos + 2
            self.add(self.text[self.pos:end])
            self.pos = end
            return
        self.pos = match.end()
        name, default = match.group(2) or match.group(1), match.group(4)
        value = self.variables.get(name)
        if name.isdigit() and default is not None:
            self.notes.append(f"line {self.line}: the script's argument ${name} is not known here; took the "
                              f"default of `{match.group(0)}`")
            value = default
        elif default is not None and value == "":
            value = default
        if value is None:
            self.add(match.group(0))  # not set by the script: an environment variable, read by the grammar
        elif quoted or "$(" in value:  # a command's output is one word here: the grammar will refuse it
            self.add(value)
        else:  # unquoted: blanks in the value separate words
            fields = re.split(r"[ \t\n]+", value)
            for index, text in enumerate(fields):
                if index:
                    self.end_word()
                if text:
                    self.add(text)

    def redirection(self) -> None:
        descriptor = "".join(self.word) if self.started and "".join(self.word).isdigit() else ""
        if descriptor:
            self.word, self.started = [], False
        self.end_word()
        operator = next(op for op in _REDIRECTIONS if self.text.startswith(op, self.pos))
        self.pos += len(operator)
        while self.peek() in (" ", "\t") and self.peek():
            self.pos += 1
        words, start, self.words = self.words, self.start, ["target"]  # a non-empty list keeps `start`
        while self.peek() and self.peek() not in " \t\n;&|<>()":
            self.step()
        self.end_word()
        target = " ".join(self.words[1:])
        self.words, self.start = words, start
        if operator in ("<<", "<<-"):
            self.heredocs.append((target, operator == "<<-"))
            self.notes.append(f"line {self.line}: ignored a here-document (`{operator}{target}`)")
        else:
            self.notes.append(f"line {self.line}: ignored the redirection `{descriptor}{operator}{target}`")

    def skip_heredocs(self) -> None:
        """After the line that opened them, here-documents' bodies: lines up to each delimiter."""
        for delimiter, tabs in self.heredocs:
            while self.pos < len(self.text):
                end = self.text.find("\n", self.pos)
                end = len(self.text) if end < 0 else end
                line, self.pos = self.text[self.pos:end], end + 1
                if (line.lstrip("\t") if tabs else line) == delimiter:
                    break
            else:
                self.fail(f"the here-document `<<{delimiter}` never ends")
        self.heredocs = []
