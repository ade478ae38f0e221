"""The bundled server's own text types (not in rl_verifier): exact, normalised, multiple choice, regex.

The candidate answer is the content of the last `\\boxed{}` when the output has one (the convention the math and
prompt templates already teach), otherwise the whole output; `answer.value` may be one string or a list of
accepted strings. `regex` is the exception: its pattern is searched in the whole output (or must match the
candidate in full with `"match": "full"`). Patterns come from the dataset, not from the model, so they are trusted
like the rest of verification_info.
"""

from __future__ import annotations

import re
import string
import unicodedata
from typing import Any

from rlc.reward_server.verifiers.base import BadVerificationInfo, Context, require
from rlc.reward_server.verifiers.extract import boxed_content

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)
_LETTER = r"\(?([A-Za-z])\)?"
_STATED_CHOICE = re.compile(rf"answer\s*(?:is|:)?\s*:?\s*{_LETTER}(?![A-Za-z])", re.IGNORECASE)
_BARE_CHOICE = re.compile(rf"\s*{_LETTER}[.)]?\s*")


async def exact_match(output: str, answer: dict[str, Any], ctx: Context) -> float:
    candidate = _candidate(output).strip()
    return float(any(candidate == value.strip() for value in _values(answer, "exact_match")))


async def normalized_match(output: str, answer: dict[str, Any], ctx: Context) -> float:
    candidate = normalize(_candidate(output))
    return float(any(candidate == normalize(value) for value in _values(answer, "normalized_match")))


async def multiple_choice(output: str, answer: dict[str, Any], ctx: Context) -> float:
    letters = {value.strip().strip("()").upper() for value in _values(answer, "multiple_choice")}
    if not all(len(letter) == 1 and letter.isalpha() for letter in letters):
        raise BadVerificationInfo("multiple_choice: verification_info.answer.value must be option letters "
                                  f"such as 'B', got {sorted(letters)}")
    return float(choice(output) in letters)


async def regex(output: str, answer: dict[str, Any], ctx: Context) -> float:
    pattern = require(answer, "pattern", str, "regex")
    mode = answer.get("match", "search")
    if mode not in ("search", "full"):
        raise BadVerificationInfo(f"regex: verification_info.answer.match must be 'search' or 'full', got {mode!r}")
    try:
        compiled = re.compile(pattern)
    except re.error as e:
        raise BadVerificationInfo(f"regex: invalid pattern {pattern!r}: {e}") from None
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
