"""Legacy command lines and shell scripts -> the override texts that the verl command in them receives.

What verl receives is what bash made of the script, so the script's words are expanded as bash would
(`rlc.shell`), and its control flow is followed here: an `if` whose condition is known when converting takes its
branch; a branch decided at run time, a loop or a `case` makes what it assigns unknowable, and a verl command
inside one is an error naming the line. A function's body is not run. An argument of the verl command whose value
cannot be known when converting (a command's output, arithmetic over the environment) is an error naming the line.

The verl command is the first one that runs `verl.trainer.main_ppo` (or a `main_ppo` module or script, or
II-VERL's `verl train-ppo`), whatever launches it (`python3 -m`, `torchrun`, `ray job submit -- ...`, `nohup`).
Other verl entry points (`main_generation`, the SFT trainers, a recipe's `main_dapo`) are refused by name: rlc
runs one trainer. Hydra's `--config-name` of verl's own trainer configs maps to rlc's `backend`. Environment
assignments in front of the command and `export`s before it are recorded in `env`. Text without such a command
is taken as bare overrides when every word has an `=`. Everything else is ignored with a note.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from rlc.shell import (
    DECLARATIONS,
    SCRIPT_ARGUMENTS,
    ArrayWord,
    Command,
    Lexer,
    Scope,
    ShellError,
    scan_assignments,
)
from rlc.shell_builtins import decide, literal

ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\+?=")
_TRAINER = re.compile(r"([\w]+\.)*main_ppo")
_OTHER_ENTRY = re.compile(r"verl(\.[\w]+)+|recipe(\.[\w]+)+")
_SCRIPT_ARGUMENTS = {SCRIPT_ARGUMENTS}
# Hydra's options after the entry point (and ii_verl's `verl train-ppo --config_path/--backend`).
_VALUE_OPTIONS = {"--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd", "--cfg", "-c", "--package",
                  "-p", "--experimental-rerun", "--config_path", "--backend"}
_FLAG_OPTIONS = {"--multirun", "-m", "--resolve", "--info", "--help", "-h", "--hydra-help", "--version", "--run",
                 "-r", "--shell-completion", "-sc"}
# verl's own trainer configs (verl/trainer/config) and the rlc backend each one means.
TRAINER_CONFIGS = {"ppo_trainer": "fsdp", "ppo_megatron_trainer": "megatron"}
_ENTRY_REFUSALS = {
    "main_generation": "generates responses for a dataset and does not train",
    "main_eval": "scores saved generations and does not train",
    "fsdp_sft_trainer": "is supervised fine-tuning; rlc runs RL post-training (GRPO/PPO) only",
    "sft_trainer": "is supervised fine-tuning; rlc runs RL post-training (GRPO/PPO) only",
    "main_dapo": "is DAPO's trainer: dynamic sampling (`algorithm.filter_groups`) and the overlong reward buffer "
                 "are not implemented in rlc; its clip-higher (`clip_ratio_low`/`clip_ratio_high`) is, with "
                 "verl.trainer.main_ppo",
}


class CmdlineError(ValueError):
    pass


@dataclass
class CommandLine:
    overrides: list[str]
    env: dict[str, str] = field(default_factory=dict)  # exports and `VAR=x` in front of the verl command
    program: str | None = None  # e.g. "torchrun --nproc_per_node=8 -m verl.trainer.main_ppo"; None: bare overrides
    notes: list[str] = field(default_factory=list)
    config_file: str | None = None  # II-VERL's `verl train-ppo CONFIG`: the user's YAML, which rlc reads as is
    backend: str | None = None  # from `--config-name` or II-VERL's `--backend`
    config_name: str | None = None  # Hydra's `--config-name` of a config that is not verl's own trainer config
    config_path: str | None = None  # Hydra's `--config-path`


@dataclass
class _Block:
    """An open `if`/loop/`case`/function: whether its commands run (True/False) or it is decided at run time."""

    kind: str
    line: int
    runs: bool | None
    taken: bool = False  # an `if`: a branch before this one was known to run
    name: str | None = None  # a function's

    def why(self) -> str:
        return {"if": f"the `if` on line {self.line}, decided at run time",
                "loop": f"the loop on line {self.line}", "case": f"the `case` on line {self.line}",
                "function": f"the function defined on line {self.line}"}.get(self.kind, f"line {self.line}")


def split_command_line(text: str, script: str | None = None, cwd: str | None = None) -> CommandLine:
    """The verl command in `text` (a command line or a whole script) as override texts.

    `script`: the script's path as bash would see it in `$0`; `cwd`: the folder `$(pwd)` means (default: here).
    """
    scope = Scope(script=script, assigned_on=scan_assignments(text), **({"cwd": cwd} if cwd else {}))
    state = _Walk(scope, text)
    _check_nesting(text)
    try:
        for command in Lexer(text, scope).commands():
            state.command(command)
    except ShellError as err:
        raise CmdlineError(str(err)) from None
    return state.result()


class _Walk:
    """The script's commands in order: control flow, assignments, and which one is the verl command."""

    def __init__(self, scope: Scope, text: str) -> None:
        self.scope, self.notes = scope, scope.notes
        self.lines = text.replace("\r\n", "\n").split("\n")
        self.env: dict[str, str] = {}
        self.blocks: list[_Block] = []
        self.chosen: Command | None = None
        self.entry = 0
        self.loose: list[Command] = []  # lines of bare overrides
        self.function_pending: str | None = None  # `name() {`: the name, until its `{`

    def runs(self) -> bool | None:
        if any(b.runs is False for b in self.blocks):
            return False
        return None if any(b.runs is None for b in self.blocks) else True

    def unknown_block(self) -> _Block:
        return next(b for b in reversed(self.blocks) if b.runs is None)

    def command(self, command: Command) -> None:
        words, taints = list(command.words), list(command.taints)
        while words:
            head = words[0]
            if head in ("then", "do", "else", "{", "fi", "done", "esac", "}", "elif", "if", "while", "until",
                        "for", "select", "case", "function") or (len(words) > 1 and words[1] == "()"):
                consumed = self.control(command.line, words, taints)
                words, taints = words[consumed:], taints[consumed:]
            else:
                break
        if words:
            self.simple(Command(command.line, words, taints))

    def control(self, line: int, words: list[str], taints: list[str | None]) -> int:
        """Open or close a block for the reserved word at `words[0]`; how many words it used."""
        head = words[0]
        if head == "if":
            outcome = decide(words[1:], taints[1:])
            self.blocks.append(_Block("if", line, outcome, taken=outcome is True))
            return len(words)
        if head == "elif" and self.blocks:
            block = self.blocks[-1]
            outcome = decide(words[1:], taints[1:]) if block.runs is not None else None
            block.runs = False if block.taken else outcome
            block.taken = block.taken or outcome is True
            return len(words)
        if head == "else" and self.blocks:
            block = self.blocks[-1]
            block.runs = None if block.runs is None else not block.taken
            return 1
        if head in ("while", "until", "for", "select", "case"):
            self.blocks.append(_Block("case" if head == "case" else "loop", line, None))
            return len(words)
        if head == "function" or (len(words) > 1 and words[1] == "()"):
            name = words[1] if head == "function" else head
            self.function_pending, self.scope.functions[name] = name, None
            self.notes.append(f"line {line}: the function `{name}` is defined here; rlc runs its body only for "
                              "`$(name)`")
            return 2 + (len(words) > 2 and words[2] == "()") if head == "function" else 2
        if head == "{":
            self.blocks.append(_Block("function" if self.function_pending else "brace", line,
                                      not self.function_pending, name=self.function_pending))
            self.function_pending = None
            return 1
        if head in ("fi", "done", "esac", "}") and self.blocks:
            block = self.blocks.pop()
            if block.kind == "function" and block.name and line > block.line:  # the body: the lines between
                self.scope.functions[block.name] = "\n".join(self.lines[block.line:line - 1])
        return 1

    def simple(self, command: Command) -> None:
        runs = self.runs()
        words, lead = command.words, _count_assignments(command.words)
        entry = _entry_point(words, lead)
        if runs is False:
            if entry is not None:
                self.notes.append(f"line {command.line}: ignored the verl command `{command.show()}`: it is in a "
                                  "branch that does not run, or in a function's body")
            return
        if entry is not None and runs is None:
            raise CmdlineError(f"line {command.line}: the verl command is inside {self.unknown_block().why()}; "
                               "rlc converts one command whose arguments are known: take it out of the block")
        if words[0] in DECLARATIONS or lead == len(words):
            self.assign(command, runs)
        elif runs is None:
            return
        elif entry is not None and self.chosen is None:
            self.chosen, self.entry = command, entry
            assigned = _assignments(words[:lead], command.taints[:lead])
            self.env.update({k: literal(v) for k, (v, _, _) in assigned.items() if isinstance(v, str)})
        elif entry is not None:
            self.notes.append(f"line {command.line}: ignored a second verl command `{command.show()}`")
        elif all("=" in w or w in _SCRIPT_ARGUMENTS or w.startswith("~") for w in words):
            self.loose.append(command)
        else:
            self.notes.append(f"line {command.line}: ignored `{command.show()}`")

    def assign(self, command: Command, runs: bool | None) -> None:
        """Assignments and `export`/`declare`: the scope's variables; unknowable inside a run-time block."""
        words, taints = command.words, command.taints
        declaring = words[0] in DECLARATIONS
        if declaring:
            exported = words[0] == "export" or any(re.fullmatch(r"-\w*x\w*", w) for w in words[1:])
            words, taints = words[1:], taints[1:]
        for name, (value, taint, append) in _assignments(words, taints).items():
            elements = _element_taints(words, name)
            if append:
                elements = _appended_taints(self.scope, name, value, elements)
                value = _appended(self.scope.variables.get(name), value)
                taint = taint or self.scope.unknowable.get(name)
            if runs is None:
                taint = (f"line {command.line}: `{name}` is set inside {self.unknown_block().why()}; rlc cannot "
                         "tell which value verl gets: set it outside the block")
                elements = None  # every element is as unknowable as the whole
            self.scope.assign(name, value, taint, elements)
            if declaring and exported and isinstance(value, str) and not taint:
                self.env[name] = literal(value)
        if declaring and exported:
            for word in words:
                if not ASSIGNMENT.match(word) and isinstance(self.scope.variables.get(word), str):
                    self.env[word] = literal(self.scope.variables[word])

    def result(self) -> CommandLine:
        if self.chosen is None:
            if not self.loose:
                seen = f"; ignored: {'; '.join(self.notes)}" if self.notes else ""
                raise CmdlineError("found no verl command (such as `python3 -m verl.trainer.main_ppo ...`) and no "
                                   f"`key=value` overrides{seen}")
            line = CommandLine([], self.env, None, self.notes)
            for command in self.loose:
                _refuse_tainted(command, 0)
                line.overrides += _arguments(command.words, "the command line", command.line, line)
            return line
        for command in self.loose:
            if set(command.words) <= _SCRIPT_ARGUMENTS:
                self.notes.append(f"line {command.line}: ignored `{command.show()}` (the script's own arguments)")
                continue
            self.notes.append(f"line {command.line}: `{command.show()}` is not part of the verl command (did a "
                              "comment or a missing `\\` end it?); ignored")
        return self.verl_command(self.chosen, self.entry)

    def verl_command(self, command: Command, entry: int) -> CommandLine:
        lead = _count_assignments(command.words)
        module = command.words[entry]
        _refuse_entry(module, command.line)
        _refuse_tainted(command, entry + 1)
        program = " ".join(command.words[lead:entry + 1])
        options = [w for w in command.words[lead + 1:entry] if w.startswith("-") and w not in ("-m", "--module", "--")]
        if options:
            self.notes.append(f"launcher options {' '.join(options)} are not part of the config; rlc launch sets "
                              "its own")
        line = CommandLine([], self.env, program, self.notes)
        line.overrides = _arguments(command.words[entry + 1:], program, command.line, line)
        return line


MAX_NESTING = 100


def _check_nesting(text: str) -> None:
    """Expansions nest by brackets: bounding the brackets' depth bounds the evaluator's recursion."""
    depth, line = 0, 1
    for char in text:
        depth = max(0, depth + {"(": 1, "{": 1, ")": -1, "}": -1}.get(char, 0))
        line += char == "\n"
        if depth > MAX_NESTING:
            raise CmdlineError(f"line {line}: brackets nested more than {MAX_NESTING} deep; rlc does not read that")


def _refuse_entry(module: str, line: int) -> None:
    if _TRAINER.fullmatch(module) or module == "train-ppo" or module.endswith("main_ppo.py"):
        return
    last = module.rsplit(".", 1)[-1]
    why = _ENTRY_REFUSALS.get(last, "is not verl's PPO trainer")
    raise CmdlineError(f"line {line}: `{module}` {why}; rlc converts commands that run verl.trainer.main_ppo")


def _refuse_tainted(command: Command, start: int) -> None:
    for word, taint in zip(command.words[start:], command.taints[start:], strict=True):
        if taint:
            shown = f"the verl argument `{literal(word)}`" if word else "the verl command"
            raise CmdlineError(f"{taint} (it reaches {shown} on line {command.line})")


def _entry_point(words: list[str], start: int) -> int | None:
    """Index of the word that names a verl entry point, or None when `words` does not run verl."""
    for index in range(start, len(words)):
        word, before = words[index], words[index - 1] if index > start else ""
        if before in ("-m", "--module") and (_TRAINER.fullmatch(word) or _OTHER_ENTRY.fullmatch(word)):
            return index
        if re.search(r"(^|/)main_ppo\.py$", word) or (word == "train-ppo" and re.search(r"(^|/)verl$", before)):
            return index
    return None


def _arguments(words: list[str], program: str, line: int, out: CommandLine) -> list[str]:
    overrides: list[str] = []
    index = 0
    while index < len(words):
        word = literal(words[index]) if words[index].startswith("-") else words[index]
        index += 1
        if word in _SCRIPT_ARGUMENTS:
            out.notes.append("ignored `$@` (the script's own arguments; give them to rlc with --set)")
        elif word.startswith("-"):
            name, _, value = word.partition("=")
            if name in _VALUE_OPTIONS and not value:
                if index >= len(words):
                    raise CmdlineError(f"line {line}: option `{name}` of {program} has no value")
                value, index = literal(words[index]), index + 1
            if name not in _VALUE_OPTIONS | _FLAG_OPTIONS:
                raise CmdlineError(f"line {line}: `{word}` is not an option rlc knows for {program}")
            _option(name, value, line, out)
        elif "=" in word or word.startswith("~"):
            overrides.append(word)
        elif program.endswith("train-ppo") and not overrides and out.config_file is None:
            out.config_file = literal(word)
        elif not word:
            raise CmdlineError(f"line {line}: an empty argument (`\"\"`) is not an override")
        elif word.isspace():
            raise CmdlineError(f"line {line}: a `\\` followed by a space instead of the end of the line passes "
                               f"`{word}` to {program}; remove the space after the `\\`")
        else:
            raise CmdlineError(f"line {line}: `{literal(word)}` is neither a `key=value` override nor an option of "
                               f"{program}")
    return overrides


def _option(name: str, value: str, line: int, out: CommandLine) -> None:
    """Hydra's and II-VERL's options: what maps to rlc is recorded in `out`, the rest is noted."""
    if name in ("--multirun", "-m"):
        out.notes.append(f"ignored `{name}`: rlc converts a single run")
    elif name in ("--config-name", "-cn"):
        config = value.removesuffix(".yaml")
        if config not in TRAINER_CONFIGS:
            out.config_name = config  # a config of the user's: `rlc.convert` reads it from --config-path
            return
        out.backend = TRAINER_CONFIGS[config]
        out.notes.append(f"`{name}={value}` is verl's {out.backend} trainer config: backend {out.backend}")
    elif name == "--backend":
        if value not in ("fsdp", "megatron"):
            raise CmdlineError(f"line {line}: `--backend {value}`: the backend is fsdp or megatron")
        out.backend = value
    elif name == "--config_path":
        out.config_file = value
    elif name in ("--config-path", "-cp", "--config-dir", "-cd"):
        out.config_path = value
    else:
        out.notes.append(f"ignored option `{name}{' ' + value if value else ''}`")


def _count_assignments(words: list[str]) -> int:
    count = 0
    while count < len(words) and ASSIGNMENT.match(words[count]):
        count += 1
    return count


Assigned = dict[str, tuple[str | list[str], str | None, bool]]


def _assignments(words: list[str], taints: list[str | None]) -> Assigned:
    """`NAME=value`, `NAME+=value`, `NAME=(…)` words: each name's value, its taint and whether it appends."""
    out: Assigned = {}
    for word, taint in zip(words, taints, strict=True):
        match = ASSIGNMENT.match(word)
        if not match:
            continue
        name = match.group(0).rstrip("+=")
        value: str | list[str] = word.items if isinstance(word, ArrayWord) else word[match.end():]
        out[name] = (value, taint, "+=" in match.group(0))
    return out


def _element_taints(words: list[str], name: str) -> list[str | None] | None:
    """The taints of the elements of `name=(…)` among `words` (the last such assignment), or None."""
    arrays = [w for w in words if isinstance(w, ArrayWord) and ASSIGNMENT.match(w)
              and ASSIGNMENT.match(w).group(0).rstrip("+=") == name]
    return list(arrays[-1].taints) if arrays else None


def _appended_taints(scope: Scope, name: str, new: str | list[str],
                     elements: list[str | None] | None) -> list[str | None] | None:
    """Element taints after `name+=(…)`: the old elements' (or the old value's taint for each), then the new."""
    old = scope.variables.get(name)
    if not isinstance(new, list) or elements is None:
        return None
    if isinstance(old, list):
        before = scope.element_taints.get(name) or [scope.unknowable.get(name)] * len(old)
    else:
        before = [scope.unknowable.get(name)] if old else []
    return before + elements


def _appended(old: str | list[str] | None, new: str | list[str]) -> str | list[str]:
    if isinstance(new, list):
        return (old if isinstance(old, list) else [old] if old else []) + new
    return (old[0] if isinstance(old, list) and old else old or "") + new
