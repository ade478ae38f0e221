"""`swe_verifiable`: how close the output's edit of `answer.input` comes to the reference edit
`answer.ground_truth`, scored as rl_verifier scores it (its rule comes from SWE-RL, Wei et al. 2025).

The predicted file is the last fenced code block whose fence names a language (```python, ```c++, ```c#); no
such block, or an empty one, scores 0.0. Both edits become unified diffs against the stripped input (3 lines
of context, headers dropped); an empty diff on either side scores 0.0 (an edit that changes nothing must not be
rewarded), otherwise the score is difflib's similarity ratio of the two diffs, without its junk heuristic.
The fence is found by RE2 (linear); the diff similarity is quadratic in the worst case, which the pool's
deadline bounds.
"""

from __future__ import annotations

import difflib
from typing import Any

import re2

from rlc.reward_server.verifiers.base import require
from rlc.reward_server.verifiers.extract import PY_WORD

# rl_verifier's ```([\w#+]+)\n(.*?)``` (DOTALL), with Python's Unicode \w spelled out for RE2.
_TAGGED_BLOCK = re2.compile(rf"(?s)```(?:{PY_WORD}|[#+])+\n(.*?)```")


def swe_verifiable(output: str, answer: dict[str, Any]) -> float:
    original = require(answer, "input", str, "swe_verifiable").strip()
    reference = require(answer, "ground_truth", str, "swe_verifiable").strip()
    predicted = last_tagged_block(output)
    if not predicted:
        return 0.0
    return similarity(unified_diff(original, predicted), unified_diff(original, reference))


def last_tagged_block(text: str) -> str | None:
    blocks = _TAGGED_BLOCK.findall(text)
    return blocks[-1].strip() if blocks else None


def unified_diff(before: str, after: str) -> str:
    lines = difflib.unified_diff(before.splitlines(), after.splitlines(), fromfile="old", tofile="new",
                                 lineterm="", n=3)
    body = list(lines)[2:]  # the ---/+++ header names the files, not the change
    return "\n".join(body)


def similarity(predicted_diff: str, reference_diff: str) -> float:
    if not predicted_diff or not reference_diff:
        return 0.0
    return difflib.SequenceMatcher(None, predicted_diff, reference_diff, autojunk=False).ratio()
