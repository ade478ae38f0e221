"""rl_verifier's optional format reward (its USE_FORMAT_VERIFIER), off unless the server is started with
`--format-reward` (rl_verifier has it on by default).

It is tuned to DeepSeek-R1-style outputs: 1.0 only when the output has no CJK letters, has a <think>...</think>
block, still carries DeepSeek's end-of-sentence token, and has the answer container its type needs (a `\\boxed{}`
for math, a code block for code). Off by default because a model without those tokens could never score above
0.9 with it. As in rl_verifier, the code block's language is read from the top level of verification_info (not
from `answer`), so datasets score the same on both servers.
"""

from __future__ import annotations

import unicodedata

from rlc.reward_server.verifiers.extract import has_code_block, has_think_block, last_boxed

EOS_TOKEN = "<｜end▁of▁sentence｜>"


def with_format(answer_score: float, format_score: float) -> float:
    """rl_verifier's weighting, written as it writes it so that the floats agree to the last bit."""
    return 0.9 * answer_score + 0.1 * format_score


def format_score(output: str, vtype: str, language: object = "python") -> float:
    if any("CJK" in unicodedata.name(ch, "") for ch in output if ch.isalpha()):
        return 0.0
    if not has_think_block(output) or EOS_TOKEN not in output:
        return 0.0
    if vtype == "math_verifiable" and not last_boxed(output):
        return 0.0
    if vtype == "code_verifiable" and not has_code_block(output, language):
        return 0.0
    return 1.0
