"""What bash computes by itself, evaluated when converting: integer arithmetic, `[ … ]` tests, pattern operations
on a value, and the path helpers a script calls to find itself (`pwd`, `dirname`, `realpath`, `cd … && pwd`).

Each works on text `rlc.shell` has already expanded, and answers None (or raises ValueError) where bash would need
what only run time has: the filesystem's state for `[ -f … ]`, a command rlc does not evaluate.
"""

from __future__ import annotations

import ast
import fnmatch
import operator
import os
import re
import time
from pathlib import Path
from typing import Protocol


def has_environment(text: str) -> bool:
    """Whether override text still holds a variable of the environment (an unescaped `$`)."""
    return any(text[at] == "$" and (at - len(text[:at].rstrip("\\"))) % 2 == 0 for at in range(len(text)))


def literal(text: str) -> str:
    """Override text without environment references, as plain text."""
    return text.replace("\\$", "$")


_ARITHMETIC_OPERATORS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
                         ast.Mod: lambda a, b: a - b * int(a / b), ast.Pow: operator.pow,
                         ast.FloorDiv: lambda a, b: int(a / b), ast.LShift: operator.lshift,
                         ast.RShift: operator.rshift, ast.BitAnd: operator.and_, ast.BitOr: operator.or_,
                         ast.BitXor: operator.xor}
_COMPARISONS = {ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge,
                ast.Eq: operator.eq, ast.NotEq: operator.ne}


def integer_expression(text: str, names: dict[str, int]) -> int:
    """Bash integer arithmetic over literals and `names` (truncating `/` and `%`); ValueError if not that."""
    python = re.sub(r"(?<![/*])/(?![/*])", "//", text).replace("&&", " and ").replace("||", " or ")
    python = re.sub(r"!(?!=)", " not ", python)
    try:
        tree = ast.parse(python.strip() or "0", mode="eval")
        return int(_evaluate(tree.body, names))
    except (SyntaxError, KeyError, ZeroDivisionError, OverflowError, RecursionError, MemoryError) as err:
        raise ValueError(f"not integer arithmetic: {err}") from None


def _wrap(value: int) -> int:
    return (value + 2 ** 63) % 2 ** 64 - 2 ** 63


def _evaluate(node: ast.AST, names: dict[str, int]) -> int:
    if isinstance(node, ast.Constant) and isinstance(node.value, int):
        return node.value
    if isinstance(node, ast.Name):
        return names[node.id]
    if isinstance(node, ast.BinOp) and type(node.op) in _ARITHMETIC_OPERATORS:
        left, right = _evaluate(node.left, names), _evaluate(node.right, names)
        if isinstance(node.op, ast.FloorDiv | ast.Mod) and right == 0:
            raise ValueError("division by 0")
        if isinstance(node.op, ast.Pow):  # bash's integers are 64 bits wide and wrap
            if right < 0:
                raise ValueError("exponent less than 0")
            return _wrap(pow(left, right, 2 ** 64))
        if isinstance(node.op, ast.LShift | ast.RShift):
            right %= 64
        return _wrap(_ARITHMETIC_OPERATORS[type(node.op)](left, right))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd | ast.Not | ast.Invert):
        value = _evaluate(node.operand, names)
        return {ast.USub: -value, ast.UAdd: value, ast.Not: int(not value), ast.Invert: ~value}[type(node.op)]
    if isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in _COMPARISONS:
        return int(_COMPARISONS[type(node.ops[0])](_evaluate(node.left, names), _evaluate(node.comparators[0],
                                                                                           names)))
    if isinstance(node, ast.BoolOp):
        values = [_evaluate(v, names) for v in node.values]
        return int(all(values) if isinstance(node.op, ast.And) else any(values))
    if isinstance(node, ast.IfExp):
        return _evaluate(node.body if _evaluate(node.test, names) else node.orelse, names)
    raise ValueError("not integer arithmetic")




def remove_pattern(value: str, pattern: str, op: str) -> str:
    """`${X#p}`, `${X##p}`, `${X%p}`, `${X%%p}`: the shortest or longest match cut from the start or the end."""
    cuts = range(len(value) + 1)
    if op.startswith("#"):
        ends = [i for i in cuts if fnmatch.fnmatchcase(value[:i], pattern)]
        return value[(max(ends) if op == "##" else min(ends)):] if ends else value
    starts = [i for i in cuts if fnmatch.fnmatchcase(value[i:], pattern)]
    return value[:(min(starts) if op == "%%" else max(starts))] if starts else value


def replace_pattern(value: str, pattern: str, replacement: str, op: str) -> str:
    if op == "/#":
        ends = [i for i in range(len(value), -1, -1) if fnmatch.fnmatchcase(value[:i], pattern)]
        return replacement + value[ends[0]:] if ends else value
    if op == "/%":
        starts = [i for i in range(len(value) + 1) if fnmatch.fnmatchcase(value[i:], pattern)]
        return value[:starts[0]] + replacement if starts else value
    out, pos, replaced = [], 0, False
    while pos < len(value):
        end = next((e for e in range(len(value), pos, -1) if fnmatch.fnmatchcase(value[pos:e], pattern)), None)
        if end is None or (replaced and op == "/"):
            out.append(value[pos])
            pos += 1
            continue
        out.append(replacement)
        pos, replaced = end, True
    return "".join(out)


PATH_HELPERS = ("pwd", "dirname", "basename", "realpath", "readlink", "cd", "date", "echo")


class WorkingFolder(Protocol):
    cwd: str


def run_helper(scope: WorkingFolder, words: list[str]) -> str | None:
    """A path helper's output (`cd` moves `scope.cwd` and prints nothing); None where `words` is not one."""
    name, args = words[0], [w for w in words[1:] if not w.startswith("-")]
    flags = [w for w in words[1:] if w.startswith("-")]
    if name == "cd":
        scope.cwd = os.path.normpath(os.path.join(scope.cwd, os.path.expanduser(args[0]) if args else "~"))
        return ""
    if name == "pwd":
        return scope.cwd
    if name == "echo" and not flags:
        return " ".join(args)
    if name == "date":
        return time.strftime(args[0][1:]) if len(args) == 1 and args[0].startswith("+") and not flags else None
    if len(args) != 1 and not (name == "basename" and len(args) == 2):
        return None
    path = args[0]
    if name == "dirname":
        return os.path.dirname(path.rstrip("/")) or ("/" if path.startswith("/") else ".")
    if name == "basename":
        base = os.path.basename(path.rstrip("/"))
        return base[:-len(args[1])] if len(args) == 2 and base.endswith(args[1]) and base != args[1] else base
    if name == "readlink" and not {"-f", "-e", "-m"} & set(flags):
        return None
    return str(Path(scope.cwd, path).resolve())


def decide(words: list[str], taints: list[str | None]) -> bool | None:
    """A condition's outcome (`[ … ]`, `[[ … ]]`, `test`, `true`, `false`) where conversion time knows it."""
    if any(taints) or any(has_environment(w) for w in words):
        return None
    words = [literal(w) for w in words]
    negate = bool(words) and words[0] == "!"
    words = words[1:] if negate else words
    if words in (["true"], [":"], ["false"]):
        outcome = words[0] != "false"
    elif words and words[0] in ("[", "[[") and words[-1] == {"[": "]", "[[": "]]"}[words[0]]:
        outcome = _test(words[1:-1], pattern=words[0] == "[[")
    elif words and words[0] == "test":
        outcome = _test(words[1:], pattern=False)
    else:
        return None
    return None if outcome is None else outcome != negate


def _test(words: list[str], pattern: bool) -> bool | None:
    for joiner in ("||", "-o", "&&", "-a"):
        if joiner in words and (joiner.startswith(("|", "&")) == pattern):
            at = words.index(joiner)
            left, right = _test(words[:at], pattern), _test(words[at + 1:], pattern)
            if left is None or right is None:
                return None
            return (left or right) if joiner in ("||", "-o") else (left and right)
    if words[:1] == ["!"]:
        inner = _test(words[1:], pattern)
        return None if inner is None else not inner
    if len(words) == 1:
        return words[0] != ""
    if len(words) == 2 and words[0] in ("-z", "-n"):
        return (words[1] == "") == (words[0] == "-z")
    if len(words) == 3:
        left, op, right = words
        if op in ("=", "=="):
            return fnmatch.fnmatchcase(left, right) if pattern else left == right
        if op == "!=":
            return not fnmatch.fnmatchcase(left, right) if pattern else left != right
        numeric = {"-eq": operator.eq, "-ne": operator.ne, "-lt": operator.lt, "-le": operator.le,
                   "-gt": operator.gt, "-ge": operator.ge}
        if op in numeric and re.fullmatch(r"-?\d+", left) and re.fullmatch(r"-?\d+", right):
            return numeric[op](int(left), int(right))
    return None  # file tests and the like: the filesystem at run time
