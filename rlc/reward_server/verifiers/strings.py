"""The bundled server's own text types (not in rl_verifier): exact, normalised, multiple choice, regex.

The candidate answer is the content of the last `\\boxed{}` when the output has one (the convention the math and
prompt templates already teach), otherwise the whole output; `answer.value` may be one string or a list of
accepted strings. `regex` is the exception: its pattern is searched in the whole output (or must match the
candidate in full with `"match": "full"`). Patterns come from the dataset and are compiled by RE2, so that no
pattern a dataset holds can take more than linear time on what a model writes; RE2 has no lookaround and no
backreferences, and a pattern that uses them is refused (422) with RE2's reason.
"""

from __future__ import annotations

import re
import string
import unicodedata
from typing import Any

import re2

from rlc.reward_server.verifiers.base import BadVerificationInfo, require
from rlc.reward_server.verifiers.extract import PY_SPACE, boxed_content

# Python's re is kept here only because the pattern has no repetition (so it is linear) and needs Python's
# Unicode word boundaries, which RE2 lacks.
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)
_LETTER = r"\(?([A-Za-z])\)?"
# "answer", then "is" or ":", then the letter, not followed by another letter. RE2 has no lookahead, so the
# pattern consumes the character after the letter (never a letter, so never the start of the next match).
_STATED_CHOICE = re2.compile(rf"(?i)answer{PY_SPACE}*(?:is|:)?{PY_SPACE}*:?{PY_SPACE}*{_LETTER}(?:[^A-Za-z]|$)")
_BARE_CHOICE = re2.compile(rf"{PY_SPACE}*{_LETTER}[.)]?{PY_SPACE}*")
_QUIET = re2.Options()
_QUIET.log_errors = False  # a bad dataset pattern is the request's 422, not a line on the server's stderr


def exact_match(output: str, answer: dict[str, Any]) -> float:
    candidate = _candidate(output).strip()
    return float(any(candidate == value.strip() for value in _values(answer, "exact_match")))


def normalized_match(output: str, answer: dict[str, Any]) -> float:
    candidate = normalize(_candidate(output))
    return float(any(candidate == normalize(value) for value in _values(answer, "normalized_match")))


def multiple_choice(output: str, answer: dict[str, Any]) -> float:
    letters = {value.strip().strip("()").upper() for value in _values(answer, "multiple_choice")}
    if not all(len(letter) == 1 and letter.isalpha() for letter in letters):
        raise BadVerificationInfo("multiple_choice: verification_info.answer.value must be option letters "
                                  f"such as 'B', got {sorted(letters)}")
    return float(choice(output) in letters)


def regex(output: str, answer: dict[str, Any]) -> float:
    pattern = require(answer, "pattern", str, "regex")
    mode = answer.get("match", "search")
    if mode not in ("search", "full"):
        raise BadVerificationInfo(f"regex: verification_info.answer.match must be 'search' or 'full', got {mode!r}")
    try:
        compiled = re2.compile(pattern, _QUIET)
    except re2.error as e:
        reason = e.args[0].decode(errors="replace") if e.args and isinstance(e.args[0], bytes) else str(e)
        raise BadVerificationInfo(f"regex: invalid pattern {pattern!r} (RE2 syntax: no lookaround, no "
                                  f"backreferences): {reason}") from None
    if mode == "full":
        return float(compiled.fullmatch(_candidate(output).strip()) is not None)
    return float(compiled.search(output) is not None)


def normalize(text: str) -> str:
    """SQuAD-style: Unicode-compatible forms, lower case, no punctuation, no articles, single spaces."""
    text = unicodedata.normalize("NFKC", text).casefold().translate(_PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def choice(output: str) -> str | None:
    """The option letter the output commits to: boxed, else the last 'answer is (X)', else a bare letter."""
    boxed = boxed_content(output)
    if boxed is not None:
        found = _BARE_CHOICE.fullmatch(boxed.replace("\\text{", "").replace("}", ""))
        return found.group(1).upper() if found else None
    stated = _STATED_CHOICE.findall(output)
    if stated:
        return stated[-1].upper()
    found = _BARE_CHOICE.fullmatch(output)
    return found.group(1).upper() if found else None


def _candidate(output: str) -> str:
    boxed = boxed_content(output)
    return output if boxed is None else boxed


def _values(answer: dict[str, Any], vtype: str) -> list[str]:
    value = require(answer, "value", (str, list), vtype)
    values = [value] if isinstance(value, str) else value
    if not values or not all(isinstance(v, str) for v in values):
        raise BadVerificationInfo(f"{vtype}: verification_info.answer.value must be a string or a non-empty list "
                                  "of strings")
    return values
