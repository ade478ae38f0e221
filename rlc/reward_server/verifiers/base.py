"""What every verifier shares: the errors that become HTTP statuses, the per-process context, field checks.

Two kinds of verifier. A text verifier is `def (output, answer) -> float in [0, 1]`: pure CPU work on model
output, run by the app in a worker process under a hard deadline (`rlc.reward_server.pool`), never on the event
loop. A service verifier is `async def (output, answer, ctx) -> float`: it waits on something else (sandboxed
programs, a judge endpoint) and does only linear-time work on the output itself, so it stays on the event loop.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import httpx

from rlc.reward_server.config import ServerConfig


class BadVerificationInfo(ValueError):
    """The request cannot be scored as sent (answered 422 with this message as `detail`)."""


class UpstreamError(RuntimeError):
    """A service the verifier depends on failed (answered 502, which clients retry)."""


class Unscorable(RuntimeError):
    """The output itself cannot be scored (over a size bound, past the deadline): a verdict of 0.0, whose reason
    the app reports in the `X-Reward-Failure` header and its log."""


class Context:
    """Per worker process: the settings, the bound on concurrent sandboxes, the judge's HTTP client."""

    def __init__(self, config: ServerConfig, judge: httpx.AsyncClient | None) -> None:
        self.config = config
        self.sandboxes = anyio.CapacityLimiter(config.max_sandboxes)
        self.judge = judge
        self.judge_model = config.judge_model  # filled in from the endpoint on first use when unset


TextVerifier = Callable[[str, dict[str, Any]], float]
ServiceVerifier = Callable[[str, dict[str, Any], Context], Awaitable[float]]


def require(answer: dict[str, Any], key: str, kind: type | tuple[type, ...], vtype: str) -> Any:
    """`answer[key]`, checked to be of `kind`; a clear 422 otherwise."""
    if key not in answer:
        raise BadVerificationInfo(f"{vtype}: verification_info.answer must contain '{key}'")
    value = answer[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise BadVerificationInfo(f"{vtype}: verification_info.answer.{key} must be {names}, "
                                  f"got {type(value).__name__}")
    return value
