"""`math_verifiable`: the last `\\boxed{}` of the output against `answer.value`, compared by math-verify.

Scored as rl_verifier scores it: no (closed) `\\boxed{}` scores 0.0 without parsing; the reference is parsed as
`\\boxed{<value>}`; `math_verify.verify` gets the prediction first and the reference second (its gold/target
order is not symmetric for every expression, and matching verdicts is the point). math-verify bounds its own
work with SIGALRM, which only the main thread may use; off the main thread (a server started from a thread, as
some tests do) the timeouts are off rather than every verdict silently becoming 0.
"""

from __future__ import annotations

import threading
from typing import Any

import math_verify

from rlc.reward_server.verifiers.base import Context, require
from rlc.reward_server.verifiers.extract import last_boxed

_TIMEOUT_S = 5  # math-verify's default, per parse and per comparison


async def math_verifiable(output: str, answer: dict[str, Any], ctx: Context) -> float:
    return score(output, require(answer, "value", (str, int, float), "math_verifiable"))


def score(output: str, reference: str | int | float) -> float:
    predicted = last_boxed(output)
    if not predicted:
        return 0.0
    timeout = _TIMEOUT_S if threading.current_thread() is threading.main_thread() else None
    parsed_prediction = math_verify.parse(predicted, parsing_timeout=timeout)
    parsed_reference = math_verify.parse(f"\\boxed{{{reference}}}", parsing_timeout=timeout)
    return 1.0 if math_verify.verify(parsed_prediction, parsed_reference, timeout_seconds=timeout) else 0.0
