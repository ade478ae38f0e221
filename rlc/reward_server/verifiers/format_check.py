"""rl_verifier's optional format reward (its USE_FORMAT_VERIFIER), off unless the server is started with it.

It is tuned to DeepSeek-R1-style outputs: 1.0 only when the output has no CJK letters, has a <think>...</think>
block, still carries DeepSeek's end-of-sentence token, and has the answer container its type needs (a `\\boxed{}`
for math, a code block for code). Off by default because a model without those tokens could never score above
0.9 with it.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

from rlc.reward_server.verifiers.extract import has_code_block, last_boxed

EOS_TOKEN = "<｜end▁of▁sentence｜>"
_THINK = re.compile(r"<think>.*?</think>", re.DOTALL)
WEIGHT = 0.1  # score = (1 - WEIGHT) * answer + WEIGHT * format


def format_score(output: str, vtype: str, answer: dict[str, Any]) -> float:
    if any("CJK" in unicodedata.name(ch, "") for ch in output if ch.isalpha()):
        return 0.0
    if _THINK.search(output) is None or EOS_TOKEN not in output:
        return 0.0
    if vtype == "math_verifiable" and not last_boxed(output):
        return 0.0
    if vtype == "code_verifiable" and not has_code_block(output, answer.get("language", "python")):
        return 0.0
    return 1.0
