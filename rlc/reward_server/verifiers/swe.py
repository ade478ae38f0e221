"""`swe_verifiable`: how close the output's edit of `answer.input` comes to the reference edit
`answer.ground_truth`, scored as rl_verifier scores it (its rule comes from SWE-RL, Wei et al. 2025).

The predicted file is the last fenced code block whose fence names a language (```python, ```c++, ```c#); no
such block, or an empty one, scores 0.0. Both edits become unified diffs against the stripped input (3 lines
of context, headers dropped); an empty diff on either side scores 0.0 (an edit that changes nothing must not be
rewarded), otherwise the score is difflib's similarity ratio of the two diffs, without its junk heuristic.
The fences are found by one left-to-right scan that makes the matches rl_verifier's regex finds, in linear time
(the regex's lazy search is quadratic on many unclosed fences, and even RE2's findall spends 20 us a match); the
diff similarity is quadratic in the worst case, which the pool's deadline bounds.
"""

from __future__ import annotations

import difflib
import re
from typing import Any

from rlc.reward_server.verifiers.base import require

# The language tag and its newline, matched at one known position: a single character class then a character
# outside it, so a failed match costs the tag's length and no more.
_TAG = re.compile(r"[\w#+]+\n")


def swe_verifiable(output: str, answer: dict[str, Any]) -> float:
    original = require(answer, "input", str, "swe_verifiable").strip()
    reference = require(answer, "ground_truth", str, "swe_verifiable").strip()
    predicted = last_tagged_block(output)
    if not predicted:
        return 0.0
    return similarity(unified_diff(original, predicted), unified_diff(original, reference))


def last_tagged_block(text: str) -> str | None:
    """The last match of ```([\\w#+]+)\\n(.*?)``` (DOTALL) that findall would return, content stripped."""
    last, pos = None, 0
    while (fence := text.find("```", pos)) >= 0:
        tag = _TAG.match(text, fence + 3)
        if tag is None:
            pos = fence + 1
            continue
        close = text.find("```", tag.end())
        if close < 0:  # no later fence closes this block, nor any block opened after it
            break
        last, pos = text[tag.end() : close], close + 3
    return last.strip() if last is not None else None


def unified_diff(before: str, after: str) -> str:
    lines = difflib.unified_diff(before.splitlines(), after.splitlines(), fromfile="old", tofile="new",
                                 lineterm="", n=3)
    body = list(lines)[2:]  # the ---/+++ header names the files, not the change
    return "\n".join(body)


def similarity(predicted_diff: str, reference_diff: str) -> float:
    if not predicted_diff or not reference_diff:
        return 0.0
    return difflib.SequenceMatcher(None, predicted_diff, reference_diff, autojunk=False).ratio()
