"""Pulling the scored part out of a model's output, the way rl_verifier (and the Sandbox Fusion service it calls
for code) do, so that the bundled server gives the same verdicts as the server users already run.

Model output is hostile input, so nothing here may take more than linear time in its length. Where the reference
uses a backtracking regex (Python's `re`), this module finds the same thing with plain `str.find` scans or with
RE2 (`google-re2`, linear by construction). RE2's `\\s` is ASCII-only while Python's is Unicode, so the RE2
patterns spell out Python's class (`PY_SPACE`); tests compare each pattern with `re` itself.
"""

from __future__ import annotations

import re2

# rl_verifier keeps only what follows DeepSeek-R1's assistant tag, for every verification type.
ASSISTANT_TAG = "<｜Assistant｜>"

# Python's `\s` (str.isspace) as an RE2 class.
PY_SPACE = r"[\t\n\x0b\x0c\r\x1c-\x1f\x85\p{Z}]"

# Sandbox Fusion's fenced-block pattern (```([^\n]*)\n(.*?)\n\s*```, DOTALL) and its Python aliases: the code it
# runs is the first such block.
_FENCED = re2.compile(rf"(?s)```([^\n]*)\n(.*?)\n{PY_SPACE}*```")
_PYTHON_ALIASES = {"python", "Python", "py", "Python3", "python3", "PY"}


def assistant_response(text: str) -> str:
    return text.split(ASSISTANT_TAG)[-1].strip()


def last_boxed(text: str) -> str | None:
    """The last `\\boxed{...}` of `text`, braces included, or None when there is none or it is unclosed."""
    start = text.rfind("\\boxed")
    if start < 0:
        return None
    depth = 0
    for i in range(start, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[start : i + 1]
    return None


def boxed_content(text: str) -> str | None:
    """What is inside the last `\\boxed{...}`, or None."""
    boxed = last_boxed(text)
    if boxed is None or "{" not in boxed:
        return None
    return boxed[boxed.index("{") + 1 : -1]


def has_code_block(text: str, language: object) -> bool:
    """rl_verifier's gate (a search for ```<language>\\n(.*?)```): an output without such a block scores 0 before
    anything runs. Two scans instead of a lazy regex, which is quadratic on many unclosed fences."""
    opening = f"```{language}\n"
    start = text.find(opening)
    return start >= 0 and text.find("```", start + len(opening)) >= 0


def has_think_block(text: str) -> bool:
    """Whether `<think>.*?</think>` (DOTALL) would match: an opening tag with a closing one after it."""
    start = text.find("<think>")
    return start >= 0 and text.find("</think>", start + len("<think>")) >= 0


def python_code(text: str) -> str | None:
    """The first fenced Python block, as Sandbox Fusion extracts it."""
    for block in _FENCED.finditer(text):
        if block.group(1).strip() in _PYTHON_ALIASES:
            return block.group(2)
    return None
