"""The verification types the bundled server scores, one module each, and the table the app dispatches on.

rl_verifier's types keep its names and wire format (math_verifiable, code_verifiable, llm_judge); swe_verifiable
is named but refused with a clear reason, so that a dataset written for rl_verifier fails loudly here rather than
scoring 0. The string types are this server's own.
"""

from __future__ import annotations

from rlc.reward_server.verifiers.base import BadVerificationInfo, Context, UpstreamError, Verifier
from rlc.reward_server.verifiers.code_tests import code_verifiable
from rlc.reward_server.verifiers.judge import llm_judge
from rlc.reward_server.verifiers.math_answers import math_verifiable
from rlc.reward_server.verifiers.strings import exact_match, multiple_choice, normalized_match, regex

VERIFIERS: dict[str, Verifier] = {
    "math_verifiable": math_verifiable,
    "code_verifiable": code_verifiable,
    "llm_judge": llm_judge,
    "exact_match": exact_match,
    "normalized_match": normalized_match,
    "multiple_choice": multiple_choice,
    "regex": regex,
}

UNSUPPORTED = {
    "swe_verifiable": "swe_verifiable is not supported by the bundled server; point reward_api.api_url at an "
                      "rl_verifier server for it",
}

__all__ = ["VERIFIERS", "UNSUPPORTED", "BadVerificationInfo", "UpstreamError", "Context", "Verifier"]
