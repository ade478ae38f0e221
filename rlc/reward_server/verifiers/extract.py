"""Pulling the scored part out of a model's output, the way rl_verifier (and the Sandbox Fusion service it calls
for code) do, so that the bundled server gives the same verdicts as the server users already run."""

from __future__ import annotations

import re

# rl_verifier keeps only what follows DeepSeek-R1's assistant tag, for every verification type.
ASSISTANT_TAG = "<｜Assistant｜>"

# Sandbox Fusion's fenced-block pattern and its Python aliases: the code it runs is the first such block.
_FENCED = re.compile(r"```([^\n]*)\n(.*?)\n\s*```", re.DOTALL)
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


def has_code_block(text: str, language: str) -> bool:
    """rl_verifier's gate: an output without a ```<language> block scores 0 before anything runs."""
    return re.search(rf"```{re.escape(language)}\n(.*?)```", text, re.DOTALL) is not None


def python_code(text: str) -> str | None:
    """The first fenced Python block, as Sandbox Fusion extracts it."""
    for info, code in _FENCED.findall(text):
        if info.strip() in _PYTHON_ALIASES:
            return code
    return None
