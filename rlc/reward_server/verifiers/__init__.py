"""The verification types the bundled server scores, one module each, and the tables the app dispatches on.

rl_verifier's types keep its names and wire format (math_verifiable, code_verifiable, swe_verifiable,
llm_judge); the string types are this server's own. `TEXT_VERIFIERS` are CPU work on model output and run in the
worker pool; `SERVICE_VERIFIERS` wait on programs or a judge and run on the event loop.
"""

from __future__ import annotations

from rlc.reward_server.verifiers.base import (
    BadVerificationInfo,
    Context,
    ServiceVerifier,
    TextVerifier,
    Unscorable,
    UpstreamError,
)
from rlc.reward_server.verifiers.code_tests import code_verifiable
from rlc.reward_server.verifiers.judge import llm_judge
from rlc.reward_server.verifiers.math_answers import math_verifiable
from rlc.reward_server.verifiers.strings import exact_match, multiple_choice, normalized_match, regex
from rlc.reward_server.verifiers.swe import swe_verifiable

TEXT_VERIFIERS: dict[str, TextVerifier] = {
    "math_verifiable": math_verifiable,
    "swe_verifiable": swe_verifiable,
    "exact_match": exact_match,
    "normalized_match": normalized_match,
    "multiple_choice": multiple_choice,
    "regex": regex,
}
SERVICE_VERIFIERS: dict[str, ServiceVerifier] = {
    "code_verifiable": code_verifiable,
    "llm_judge": llm_judge,
}
TYPES = sorted({*TEXT_VERIFIERS, *SERVICE_VERIFIERS})


def score_text(vtype: str, output: str, answer: dict) -> float:
    """One text verdict; what a pool worker runs (a module-level function, so that it pickles by name)."""
    return TEXT_VERIFIERS[vtype](output, answer)


__all__ = ["TEXT_VERIFIERS", "SERVICE_VERIFIERS", "TYPES", "score_text", "BadVerificationInfo", "UpstreamError",
           "Unscorable", "Context"]
