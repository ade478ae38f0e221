"""Bash, evaluated statically: a script's words as bash would expand them, where conversion time can know them.

verl's example scripts use most of bash's expansion language, and a converted config must hold exactly what bash
would have passed to python. Parsers on PyPI do not get there (bashlex 0.18 refuses `$((…))` and arrays, cuts
`${X:-"${Y}/…"}` at the inner brace and mangles `$'…'`), so this is a small evaluator of its own.

Words come out as *override text*: what the shell made of them, with two marks the override grammar reads
(`rlc.overrides`): `${VAR}` / `${VAR:-default}` for a variable the script does not set (the environment's, at
launch) and `\\$` for a literal dollar. Every expansion whose value cannot be known when converting (a command rlc
does not evaluate, arithmetic over the environment, a variable set in a branch decided at run time) *taints* the
word with a message naming the line; the caller refuses a tainted word only where verl would receive it, so a
script's unused `$(nvidia-smi …)` costs nothing. A few path helpers (`pwd`, `dirname`, `basename`, `realpath`,
`readlink -f`, `cd … && pwd`) and `date` are evaluated at conversion time, each with a note.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import NoReturn

from rlc.shell_builtins import (
    PATH_HELPERS,
    has_environment,
    integer_expression,
    literal,
    remove_pattern,
    replace_pattern,
    run_helper,
)

NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
DECLARATIONS = ("export", "declare", "typeset", "local", "readonly")
SCRIPT_ARGUMENTS = "$@"  # the word that stands for `"$@"`, `$*`, `${@:2}`: the script's own arguments
_OPERATORS = ("&&", "||", ";;", "|&", ";", "|", "&")
_REDIRECTIONS = ("<<<", "<<-", "<<", ">>", ">&", ">|", "&>>", "&>", "<&", "<>", ">", "<")
_ANSI_C = {"n": "\n", "t": "\t", "r": "\r", "a": "\a", "b": "\b", "e": "\x1b", "E": "\x1b", "f": "\f", "v": "\v",
           "\\": "\\", "'": "'", '"': '"', "?": "?"}
_RUNTIME_PARAMETERS = {"$": "the shell's process id", "!": "a background job's process id",
                       "?": "the previous command's exit status", "-": "the shell's options"}
_RUNTIME_VARIABLES = {"RANDOM", "SECONDS", "LINENO", "BASHPID", "EPOCHSECONDS", "SRANDOM"}


class ShellError(ValueError):
    pass


class ArrayWord(str):
    """`NAME=(…)` / `NAME+=(…)`: the assignment's text, with the array's elements (and each one's taint) beside it."""

    items: list[str]
    taints: list[str | None]


@dataclass
class Command:
    line: int
    words: list[str]
    taints: list[str | None]  # per word: why its value cannot be known when converting

    def show(self) -> str:
        text = " ".join(self.words)
        return text if len(text) <= 80 else text[:77] + "..."


@dataclass
class Scope:
    """What expansion reads: the script's variables, which are unknowable, and where the script runs."""

    variables: dict[str, str | list[str]] = field(default_factory=dict)
    unknowable: dict[str, str] = field(default_factory=dict)  # name -> why its value cannot be known
    notes: list[str] = field(default_factory=list)
    script: str | None = None  # `$0` as bash would see it
    cwd: str = field(default_factory=os.getcwd)
    functions: dict[str, str | None] = field(default_factory=dict)  # the script's, with their bodies' text
    assigned_on: dict[str, list[int]] = field(default_factory=dict)  # name -> lines that assign it, in order
    element_taints: dict[str, list[str | None]] = field(default_factory=dict)  # an array's, one per element

    def assign(self, name: str, value: str | list[str], taint: str | None,
               elements: list[str | None] | None = None) -> None:
        """`elements`: an array's taints, one per element, so that a message names the element verl receives."""
        self.variables[name] = value
        if taint:
            self.unknowable[name] = taint
        else:
            self.unknowable.pop(name, None)
        if isinstance(value, list) and elements is not None and len(elements) == len(value):
            self.element_taints[name] = elements
        else:
            self.element_taints.pop(name, None)


class Lexer:
    """Commands of a script, one at a time, their words expanded as bash would (see the module docstring)."""

    def __init__(self, text: str, scope: Scope, first_line: int = 1, word_mode: bool = False) -> None:
        self.text = text.replace("\r\n", "\n")
        self.scope, self.first_line, self.word_mode = scope, first_line, word_mode
        self.pos, self.start = 0, 0  # `start`: where the current command's first word began
        self.words: list[str] = []
        self.taints: list[str | None] = []
        self.word: list[str] = []
        self.taint: str | None = None
        self.started = False  # a word is open (even an empty one: `""`)
        self.array: list[str] | None = None  # elements of `NAME=(…)` in the open word
        self.array_taints: list[str | None] = []  # and their taints
        self.heredocs: list[tuple[str, bool]] = []  # (delimiter, strip tabs) opened on the current line

    @property
    def line(self) -> int:
        return self.text.count("\n", 0, self.pos) + self.first_line

    def fail(self, message: str) -> NoReturn:
        raise ShellError(f"line {self.line}: {message}")

    def snippet(self, start: int) -> str:
        return self.text[start:start + 30].split("\n")[0]

    def peek(self, size: int = 1) -> str:
        return self.text[self.pos:self.pos + size]

    def commands(self) -> Iterator[Command]:
        """Commands one at a time: the caller records a command's assignments before the next one is read."""
        while self.pos < len(self.text):
            if self.step() or self.pos >= len(self.text):
                self.end_word()
                if self.words:
                    yield Command(self.text.count("\n", 0, self.start) + self.first_line, self.words, self.taints)
                self.words, self.taints = [], []

    def expand_word(self) -> tuple[str, str | None]:
        """The whole text as one word (quotes removed, expansions made, blanks kept): a `${X:-word}`'s word."""
        while self.pos < len(self.text):
            self.step()
        text = "".join(self.word) + "".join(self.words)
        return text, self.taint or next((t for t in self.taints if t), None)

    def end_word(self) -> None:
        if self.started:
            text = "".join(self.word)
            if self.array is not None:
                text = ArrayWord(text)
                text.items, text.taints = self.array, self.array_taints
            self.words.append(text)
            self.taints.append(self.taint)
        self.word, self.started, self.taint, self.array = [], False, None, None

    def add(self, text: str, taint: str | None = None) -> None:
        if not self.words and not self.started:
            self.start = self.pos
        self.word.append(text)
        self.started = True
        self.taint = self.taint or taint

    def add_literal(self, text: str) -> None:
        """Text the shell passes on unexpanded: its `$`s are marked literal for the grammar (`\\$`)."""
        for piece in re.split(r"(\$)", text):
            if piece == "$":
                before = "".join(self.word)
                piece = "$" if (len(before) - len(before.rstrip("\\"))) % 2 else "\\$"
            self.add(piece)

    def add_fields(self, value: str, quoted: bool, taint: str | None = None) -> None:
        """A variable's value: one word when quoted, else split on blanks (an environment reference stays whole)."""
        if quoted or self.word_mode or self.in_assignment():
            self.add(value, taint)
            return
        for index, text in enumerate(_fields(value)):
            if index:
                self.end_word()
            if text or taint:
                self.add(text, taint)

    def in_assignment(self) -> bool:
        """In the value of `NAME=…` (also after `export`/`local`), where bash does not split words."""
        if not re.match(r"[A-Za-z_]\w*\+?=", "".join(self.word)):
            return False
        words = self.words[1:] if self.words[:1] and self.words[0] in DECLARATIONS else self.words
        return all(re.match(r"[A-Za-z_]\w*\+?=|-", w) for w in words)

    def in_test(self) -> bool:
        """Inside `[[ … ]]`, where `&&`, `<`, `(` are words of the test, not operators."""
        return "[[" in self.words and "]]" not in self.words[self.words.index("[["):]

    def step(self) -> bool:
        """Read one unit of text (a character, a quoted string, an expansion); True when it ended a command."""
        char = self.peek()
        if self.word_mode and char in " \t\n;&|()<>#":
            self.add(char)
            self.pos += 1
        elif char == "\\":
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
        elif char == "~" and self.tilde_here():
            self.add("${HOME}")
            self.pos += 1
        elif self.in_test() and char in "&|<>()":
            self.add(char)
            self.pos += 1
        elif char == "(" and self.started and re.fullmatch(r"[A-Za-z_]\w*\+?=", "".join(self.word)):
            self.array_elements()
        elif char == "(" and self.peek(2) == "()" and (self.words or self.started):
            self.end_word()
            self.add("()")  # `name() {`: a function definition
            self.pos += 2
            self.end_word()
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

    def tilde_here(self) -> bool:
        """`~` at a word's start (or after an assignment's `=`), followed by `/` or the word's end, is $HOME."""
        before = "".join(self.word)
        after = self.peek(2)[1:]
        at_start = not self.started or bool(re.fullmatch(r"[A-Za-z_]\w*=", before))
        return at_start and (after in ("/", "") or after in " \t\n;:")

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

    def array_elements(self) -> None:
        """`NAME=(a "b c" $d)`: the elements, expanded and split as command words are."""
        words, taints, self.words, self.taints = self.words, self.taints, [], []
        saved, saved_taint = self.word, self.taint
        self.word, self.started, self.pos = [], False, self.pos + 1
        while self.peek() != ")":
            if not self.peek():
                self.fail("the array's `(` is never closed")
            if self.peek() == "\n" or (self.peek() == "#" and not self.started):
                self.end_word()
                end = self.text.find("\n", self.pos)
                self.pos = (end if end >= 0 else len(self.text)) if self.peek() == "#" else self.pos + 1
                continue
            self.step()
        self.end_word()
        items, item_taints = self.words, [saved_taint or t for t in self.taints]
        self.words, self.taints, self.pos = words, taints, self.pos + 1
        self.word, self.started, self.taint = saved, True, next((t for t in item_taints if t), saved_taint)
        self.array, self.array_taints = items, item_taints

    def dollar(self, quoted: bool) -> None:
        two = self.peek(3)
        if two.startswith("$(("):
            return self.arithmetic()
        if two.startswith("$("):
            return self.substitution()
        if two.startswith("${"):
            return self.braced(quoted)
        if two.startswith("$'") and not quoted:
            return self.ansi_c()
        if two.startswith('$"') and not quoted:
            self.pos += 1
            return self.double_quoted()
        name = NAME.match(self.text, self.pos + 1)
        if name:
            self.pos = name.end()
            return self.parameter(name.group(0), None, quoted)
        special = self.peek(2)[1:]
        if special and special in "@*#?$!-0123456789":
            self.pos += 2
            return self.parameter(special, None, quoted)
        self.add_literal("$")  # a lone `$`: bash passes it on
        self.pos += 1

    def ansi_c(self) -> None:
        """`$'a\\tb'`: the escapes decoded, the text otherwise literal."""
        pos, out = self.pos + 2, []
        while pos < len(self.text) and self.text[pos] != "'":
            char = self.text[pos]
            if char != "\\":
                out.append(char)
                pos += 1
                continue
            escape = re.compile(r"\\(x[0-9A-Fa-f]{1,2}|u[0-9A-Fa-f]{1,4}|U[0-9A-Fa-f]{1,8}|[0-7]{1,3}|c.|.)", re.S)
            match = escape.match(self.text, pos)
            code = match.group(1) if match else "\\"
            if code[0] in "xuU" and len(code) > 1:
                out.append(chr(int(code[1:], 16)))
            elif code[0] in "01234567":
                out.append(chr(int(code, 8)))
            elif code[0] == "c":
                out.append(chr(ord(code[1].upper()) ^ 0x40))
            else:
                out.append(_ANSI_C.get(code, "\\" + code))
            pos = match.end() if match else pos + 1
        if pos >= len(self.text):
            self.fail(f"unbalanced quote: the $' before `{self.snippet(self.pos + 2)}` is never closed")
        self.add_literal("".join(out))
        self.pos = pos + 1

    def braced(self, quoted: bool) -> None:
        end = _brace_end(self.text, self.pos + 2)
        if end < 0:
            self.fail(f"`{self.snippet(self.pos)}` has no closing `}}`")
        inner, self.pos = self.text[self.pos + 2:end], end + 1
        expand_braced(self, inner, quoted)

    def parameter(self, name: str, index: str | None, quoted: bool) -> None:
        """`$NAME`, `$1`, `$@`: the value, an environment reference, or a taint naming why it is unknowable."""
        value, taint = value_of(self, name, index)
        if name in "@*" and index is None:
            self.add(SCRIPT_ARGUMENTS)
        elif value is None:
            self.add("${" + name + "}", taint)
        elif isinstance(value, list) and (self.word_mode or (index == "*" and quoted)):
            self.add(" ".join(value), taint)
        elif isinstance(value, list):
            self.add_list(value, quoted, self.scope.element_taints.get(name) or [taint] * len(value))
        else:
            self.add_fields(value, quoted, taint)

    def add_list(self, items: list[str], quoted: bool, taints: list[str | None]) -> None:
        """`"${A[@]}"`: each element its own word (with its own taint); unquoted, each one split further."""
        for position, (item, taint) in enumerate(zip(items, taints, strict=True)):
            if position:
                self.end_word()
            self.add_fields(item, quoted, taint)

    def arithmetic(self) -> None:
        end = _arithmetic_end(self.text, self.pos + 3)
        if end < 0:
            self.fail(f"`{self.snippet(self.pos)}`: the arithmetic `$((` is never closed")
        expression, line = self.text[self.pos + 3:end], self.line
        self.pos = end + 2
        value, taint = arithmetic(self, expression, line)
        self.add(value, taint)

    def substitution(self) -> None:
        """`$(…)` or a backquoted command: a path helper's output, or a taint naming the command."""
        end = _substitution_end(self.text, self.pos)
        if end < 0:
            self.fail(f"command substitution `{self.snippet(self.pos)}` is never closed")
        inner = self.text[self.pos + 1:end - 1] if self.peek() == "`" else self.text[self.pos + 2:end - 1]
        line = self.line
        self.pos = end
        output, taint = command_output(self.scope, inner, line)
        self.add(output, taint)

    def redirection(self) -> None:
        descriptor = "".join(self.word) if self.started and "".join(self.word).isdigit() else ""
        if descriptor:
            self.word, self.started = [], False
        self.end_word()
        operator_ = next(op for op in _REDIRECTIONS if self.text.startswith(op, self.pos))
        self.pos += len(operator_)
        while self.peek() in (" ", "\t") and self.peek():
            self.pos += 1
        words, taints, start = self.words, self.taints, self.start
        self.words, self.taints = ["target"], [None]  # a non-empty list keeps `start`
        while self.peek() and self.peek() not in " \t\n;&|<>()":
            self.step()
        self.end_word()
        target = " ".join(self.words[1:])
        self.words, self.taints, self.start = words, taints, start
        if operator_ in ("<<", "<<-"):
            self.heredocs.append((target, operator_ == "<<-"))
            self.scope.notes.append(f"line {self.line}: ignored a here-document (`{operator_}{target}`)")
        elif not self.word_mode:
            self.scope.notes.append(f"line {self.line}: ignored the redirection `{descriptor}{operator_}{target}`")

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


def _fields(value: str) -> list[str]:
    """Unquoted expansion's word splitting: on blanks, but not inside an environment reference `${X:-a b}`."""
    fields, start, depth, pos = [], 0, 0, 0
    while pos < len(value):
        if value.startswith("${", pos) and has_environment(value[:pos + 1]):
            depth, pos = depth + 1, pos + 2
            continue
        if value[pos] == "}" and depth:
            depth -= 1
        elif value[pos] in " \t\n" and not depth:
            fields.append(value[start:pos])
            start = pos + 1
        pos += 1
    return [*fields, value[start:]] if fields else [value]


def _brace_end(text: str, pos: int) -> int:
    """The `}` closing the `${` whose body starts at `pos` (quotes and nested expansions respected); -1 if none."""
    depth = 1
    while pos < len(text):
        char = text[pos]
        if char == "\\":
            pos += 2
            continue
        if char == "'" and depth:
            pos = text.find("'", pos + 1)
            if pos < 0:
                return -1
        elif char == '"':
            pos = _double_quote_end(text, pos) - 1
            if pos < 0:
                return -1
        elif text.startswith("$(", pos) or char == "`":
            pos = _substitution_end(text, pos) - 1
            if pos < 0:
                return -1
        elif text.startswith("${", pos):
            depth += 1
            pos += 1
        elif char == "}":
            depth -= 1
            if not depth:
                return pos
        pos += 1
    return -1


def _arithmetic_end(text: str, pos: int) -> int:
    """Where the `))` closing a `$((` starts; -1 if never closed."""
    depth = 0
    while pos < len(text):
        if text.startswith("$(", pos) and not text.startswith("$((", pos):
            pos = _substitution_end(text, pos)
            if pos < 0:
                return -1
            continue
        if text[pos] == "(":
            depth += 1
        elif text[pos] == ")":
            if not depth and text.startswith("))", pos):
                return pos
            depth -= 1
        pos += 1
    return -1


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


def sub_word(lexer: Lexer, text: str) -> tuple[str, str | None]:
    """The word of `${X:-word}` (or a pattern), expanded in the lexer's scope."""
    return Lexer(text, lexer.scope, lexer.line, word_mode=True).expand_word()


def value_of(lexer: Lexer, name: str, index: str | None) -> tuple[str | list[str] | None, str | None]:
    """A parameter's value and why it is unknowable; None: the script leaves it to the environment."""
    scope, where = lexer.scope, f"line {lexer.line}"
    if name == "0" or (name == "BASH_SOURCE" and index in (None, "0")):
        return (scope.script, None) if scope.script else ("", f"{where}: `$0` is the script's path, not known here")
    if name.isdigit() or name == "#":
        if name == "#":
            return "0", None
        return "", (f"{where}: `${name}` is the script's argument {name}, not known when converting; "
                    "write the value in the script")
    if name in _RUNTIME_PARAMETERS or name in _RUNTIME_VARIABLES:
        return "", f"{where}: `${name}` is {_RUNTIME_PARAMETERS.get(name, 'a value bash makes at run time')}"
    if name == "PWD" and name not in scope.variables:
        scope.notes.append(f"{where}: `$PWD` evaluated when converting: {scope.cwd}")
        return scope.cwd, None
    if name not in scope.variables:
        return None, None
    value, taint = scope.variables[name], scope.unknowable.get(name)
    if index in (None, "@", "*"):
        return (value[0] if value else "") if isinstance(value, list) and index is None else value, taint
    try:
        position = integer_expression(index, {})
    except ValueError:
        return "", f"{where}: the array index `{index}` of `{name}` is not a number rlc can work out"
    items = value if isinstance(value, list) else [value]
    return (items[position] if -len(items) <= position < len(items) else ""), taint


_LENGTH = re.compile(r"#([A-Za-z_]\w*|[0-9]+)(?:\[([^\]]*)\])?")
_PARAMETER = re.compile(r"([A-Za-z_]\w*|[0-9]+|[@*#?$!-])(?:\[([^\]]*)\])?")
_OPERATION = re.compile(r":?[-=+?]|##?|%%?|//?|/[#%]?|\^\^?|,,?|:")


def expand_braced(lexer: Lexer, inner: str, quoted: bool) -> None:
    """`${…}`: a parameter with its operator (default, alternative, pattern removal, substring, length)."""
    where = f"line {lexer.line}"
    if length := _LENGTH.fullmatch(inner):
        value, taint = value_of(lexer, length.group(1), length.group(2))
        if value is None or (isinstance(value, str) and has_environment(value)):
            taint = taint or f"{where}: `${{{inner}}}` is the length of a value from the environment"
            value = ""
        lexer.add(str(len(value) if isinstance(value, list) else len(literal(value))), taint)
        return
    match = _PARAMETER.match(inner)
    if not match:
        lexer.fail(f"`${{{inner}}}` is not a parameter expansion rlc knows")
    name, index, rest = match.group(1), match.group(2), inner[match.end():]
    if not rest:
        return lexer.parameter(name, index, quoted)
    if name in "@*":
        return lexer.add(SCRIPT_ARGUMENTS)  # `${@:2}`: the script's own arguments from the second
    op = _OPERATION.match(rest)
    if not op:
        lexer.fail(f"`${{{inner}}}` is not a parameter expansion rlc knows")
    value, taint = value_of(lexer, name, index)
    if isinstance(value, list):
        value = " ".join(value)
    word = rest[op.end():]
    if op.group(0) in (":-", "-", ":=", "="):
        return _default(lexer, name, value, taint, op.group(0), word, quoted)
    if op.group(0) in (":?", "?"):
        return lexer.parameter(name, index, quoted)
    if value is None or has_environment(value):
        lexer.add("", taint or f"{where}: `${{{inner}}}` transforms `{name}`, which comes from the environment "
                               "at run time; rlc cannot compute it when converting (a reference gives a variable's "
                               f"value or a default, nothing else): set `{name}` in the script, or write the value")
        return
    try:
        result = _operate(lexer, literal(value), op.group(0), word)
    except ValueError as err:
        lexer.fail(f"`${{{inner}}}`: {err}")
    lexer.add_fields(result.replace("$", "\\$"), quoted, taint)


def _default(lexer: Lexer, name: str, value: str | None, taint: str | None, op: str, word: str,
             quoted: bool) -> None:
    """`${X:-word}`: X's value, the word where X is unset (or empty), or an environment reference with it."""
    default, default_taint = sub_word(lexer, word)
    if name.isdigit():
        lexer.scope.notes.append(f"line {lexer.line}: the script's argument ${name} is not known here; took the "
                                 f"default `{literal(default)}`")
        return lexer.add_fields(default, quoted, default_taint)
    if value is None and not taint:
        if "}" in _without_references(default):
            lexer.fail(f"the default `{literal(default)}` of `${name}` holds a `}}` that closes no reference, which "
                       "rlc cannot put in a reference (nor can verl: Hydra refuses an unquoted `}` in an argument, "
                       "`key=a}b`); write the value, or remove the `}`")
        return lexer.add("${" + name + ":-" + default + "}", default_taint)
    if value is None or (op.startswith(":") and value == ""):
        if op.endswith("="):
            lexer.scope.assign(name, default, default_taint)
        return lexer.add_fields(default, quoted, default_taint)
    lexer.add_fields(value, quoted, taint)


def _without_references(text: str) -> str:
    while (shorter := re.sub(r"\$\{[^{}]*\}", "", text)) != text:
        text = shorter
    return text


def _operate(lexer: Lexer, value: str, op: str, word: str) -> str:
    if op in (":+", "+"):
        return literal(sub_word(lexer, word)[0]) if value or op == "+" else ""
    if op == ":":
        start, _, length = word.partition(":")
        begin = integer_expression(start, {})
        end = begin + integer_expression(length, {}) if length else None
        return value[begin:end] if not length or integer_expression(length, {}) >= 0 else value[begin:int(length)]
    if op in ("^^", "^", ",,", ","):
        changed = value.upper() if op.startswith("^") else value.lower()
        return changed if len(op) == 2 else changed[:1] + value[1:]
    if op.startswith("/"):
        pattern, _, replacement = word.partition("/")
        return replace_pattern(value, literal(sub_word(lexer, pattern)[0]),
                               literal(sub_word(lexer, replacement)[0]), op)
    return remove_pattern(value, literal(sub_word(lexer, word)[0]), op)


def arithmetic(lexer: Lexer, expression: str, line: int) -> tuple[str, str | None]:
    """`$((…))` over literals and the script's variables; a taint where it needs the environment."""
    text, taint = sub_word(lexer, expression)
    if taint:
        return "", taint
    needed = f"line {line}: `$(({expression.strip()}))` needs"
    if has_environment(text):
        names = re.findall(r"\$\{?([A-Za-z_]\w*)", text)
        return "", (f"{needed} {', '.join(dict.fromkeys(names))} from the environment at run time; rlc cannot "
                    "compute it when converting: write the number, or set the variable in the script")
    values: dict[str, int] = {}
    for name in set(re.findall(r"[A-Za-z_]\w*", text)):
        value, why = value_of(lexer, name, None)
        if why:
            return "", why
        later = [at for at in lexer.scope.assigned_on.get(name, []) if at > line]
        if value is None and later:
            return "", _assigned_later(needed, name, later[0], text, values)
        if value is None or (isinstance(value, str) and has_environment(value)):
            return "", (f"{needed} `{name}` from the environment at run time; rlc cannot compute it when "
                        "converting: write the number, or set the variable in the script")
        try:
            values[name] = integer_expression(literal(value if isinstance(value, str) else value[0]), {})
        except ValueError:
            return "", f"{needed} `{name}`, whose value `{value}` is not a number"
    try:
        return str(integer_expression(literal(text), values)), None
    except ValueError as err:
        return "", f"{needed} arithmetic rlc does not evaluate ({err})"


def _assigned_later(needed: str, name: str, assigned: int, text: str, values: dict[str, int]) -> str:
    """A variable read in `$((…))` before the script assigns it: bash reads it as 0 (or the environment's value),
    so say what bash computes here rather than that the value is the environment's."""
    unset = {other: 0 for other in re.findall(r"[A-Za-z_]\w*", text)} | values
    try:
        result = f"computes {integer_expression(literal(text), unset)} with it as 0"
    except ValueError as err:
        result = "divides by zero" if "division by 0" in str(err) else "fails"
    return (f"{needed} `{name}` before the script assigns it (at line {assigned}): bash reads it as 0 here, unless "
            f"the environment sets it, and {result}; move the assignment above this line, or write the number")


def scan_assignments(text: str) -> dict[str, list[int]]:
    """Lines on which each variable is assigned (`NAME=…`, `export NAME=…`), found by their shape alone."""
    found: dict[str, list[int]] = {}
    for number, line in enumerate(text.replace("\r\n", "\n").split("\n"), 1):
        match = _ASSIGNMENT_LINE.match(line)
        if match:
            found.setdefault(match.group(1), []).append(number)
    return found


_ASSIGNMENT_LINE = re.compile(r"[ \t]*(?:(?:export|declare|typeset|readonly|local)[ \t]+(?:-\w+[ \t]+)*)?"
                              r"([A-Za-z_]\w*)\+?=")


def command_output(scope: Scope, inner: str, line: int, calling: tuple[str, ...] = ()) -> tuple[str, str | None]:
    """A command substitution's output where it is a path helper (evaluated now, with a note), else a taint.

    `$(name)` of a function of the script runs its body the same way (`calling`: the functions on the way)."""
    sub = Scope(dict(scope.variables), dict(scope.unknowable), [], scope.script, scope.cwd, scope.functions)
    shown = " ".join(inner.split())
    first = inner.split()[0] if inner.split() else ""
    body = scope.functions.get(first) if inner.split() == [first] and first not in calling else None
    if body is not None:
        return command_output(scope, body, line, (*calling, first))
    what = f"calls the script's function `{first}`" if first in scope.functions else "runs a command"
    unknown = (f"line {line}: `$({shown})` {what} whose output rlc does not know when converting; "
               "write its value in the script")
    output = ""
    try:
        commands = list(Lexer(inner, sub, line).commands())
    except ShellError:
        return "", unknown
    for command in commands:
        words = [w for w in command.words if w not in ("--",)]
        if not words or any(command.taints) or any(has_environment(w) for w in words) or words[0] not in PATH_HELPERS:
            taint = next((t for t in command.taints if t), None)
            return "", taint or unknown
        result = run_helper(sub, [literal(w) for w in words])
        if result is None:
            return "", unknown
        output = result
    scope.notes.append(f"line {line}: `$({shown})` evaluated when converting: {output}")
    return output.replace("$", "\\$"), None
