"""`math_verifiable`: the last `\\boxed{}` of the output against `answer.value`, compared by math-verify.

Scored as rl_verifier scores it: no (closed) `\\boxed{}` scores 0.0 without parsing; the reference is parsed as
`\\boxed{<value>}`; `math_verify.verify` gets the prediction first and the reference second (its gold/target
order is not symmetric for every expression, and matching verdicts is the point), each with math-verify's own
5 s timeouts, as rl_verifier runs it. Those timeouts use SIGALRM, so this runs in the main thread of a pool
worker, under the pool's hard deadline as well. A boxed answer longer than `MAX_BOXED_CHARS` is not parsed at
all: no reference answer is that long, and the parser's time grows with it.

math-verify parses LaTeX with whichever antlr4 runtime is installed, and its verdicts depend on it: on 4.9.3
(which hydra-core/omegaconf pin) it fails to parse some answers that 4.13.2 (what rl_verifier's requirements
install) parses, `50\\%` among them. `latex_parser()` names the one in use; the server logs a warning and
/ping reports it.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

from rlc.reward_server.verifiers.base import Unscorable, require
from rlc.reward_server.verifiers.extract import last_boxed

_TIMEOUT_S = 5  # math-verify's default, per parse and per comparison
MAX_BOXED_CHARS = 10_000
RL_VERIFIER_ANTLR = "4.13.2"


def latex_parser() -> str:
    """The antlr4 runtime version math-verify parses LaTeX with."""
    try:
        return version("antlr4-python3-runtime")
    except PackageNotFoundError:
        return "none"


def math_verifiable(output: str, answer: dict[str, Any]) -> float:
    return score(output, require(answer, "value", (str, int, float), "math_verifiable"))


def score(output: str, reference: str | int | float) -> float:
    predicted = last_boxed(output)
    if not predicted:
        return 0.0
    import math_verify  # here, not at the top: only pool workers score math; the server starts 2 s sooner

    if len(predicted) > MAX_BOXED_CHARS:
        raise Unscorable(f"the boxed answer has {len(predicted)} characters, over the {MAX_BOXED_CHARS} that "
                         "math_verifiable parses")
    parsed_prediction = math_verify.parse(predicted, parsing_timeout=_TIMEOUT_S)
    parsed_reference = math_verify.parse(f"\\boxed{{{reference}}}", parsing_timeout=_TIMEOUT_S)
    return 1.0 if math_verify.verify(parsed_prediction, parsed_reference, timeout_seconds=_TIMEOUT_S) else 0.0
