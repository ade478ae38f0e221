"""`code_verifiable`: the fraction of `answer.test_cases` ({"input", "output"}) that the output's program passes.

As rl_verifier with Sandbox Fusion scores it: an output without a ```python block scores 0.0; the program is the
first fenced Python block; each test case is one run with the input on stdin, passed when the run exits 0 within
its limits and its stdout matches the expected output line by line, ignoring case and surrounding whitespace,
with numbers equal to a relative 1e-5. Test cases run concurrently, each in `sandbox.run_python` on a worker
thread, so the event loop keeps serving while programs run; at most `max_sandboxes` run at once per worker.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

import anyio

from rlc.reward_server.sandbox import Limits, RunResult, SandboxRefused, run_python
from rlc.reward_server.verifiers.base import BadVerificationInfo, Context, require
from rlc.reward_server.verifiers.extract import has_code_block, python_code


async def code_verifiable(output: str, answer: dict[str, Any], ctx: Context) -> float:
    cases = _test_cases(answer)
    language = answer.get("language", "python")
    if language != "python":
        raise BadVerificationInfo(f"code_verifiable: language {language!r} is not supported by the bundled "
                                  "server (only 'python')")
    code = python_code(output) if has_code_block(output, language) else None
    if code is None:
        return 0.0
    limits = Limits(time_s=ctx.config.code_time_limit_s, memory_mb=ctx.config.code_memory_mb)
    run = functools.partial(_run, code=code, limits=limits, limiter=ctx.sandboxes,
                            allow_unsafe=ctx.config.allow_unsafe_code)
    try:
        results = await asyncio.gather(*(run(stdin) for stdin, _ in cases))
    except SandboxRefused as e:  # a 422 like an unsupported type: retrying cannot help
        raise BadVerificationInfo(str(e)) from None
    passed = sum(result.status == "ok" and same_output(result.stdout, expected)
                 for result, (_, expected) in zip(results, cases, strict=True))
    return passed / len(cases)


async def _run(stdin: str, code: str, limits: Limits, limiter: anyio.CapacityLimiter,
               allow_unsafe: bool) -> RunResult:
    run = functools.partial(run_python, code, stdin, limits, allow_unsafe=allow_unsafe)
    return await anyio.to_thread.run_sync(run, limiter=limiter)


def _test_cases(answer: dict[str, Any]) -> list[tuple[str, str]]:
    cases = require(answer, "test_cases", list, "code_verifiable")
    if not cases:
        raise BadVerificationInfo("code_verifiable: verification_info.answer.test_cases is empty")
    for i, case in enumerate(cases):
        if not isinstance(case, dict) or "input" not in case or "output" not in case:
            raise BadVerificationInfo(f"code_verifiable: test_cases[{i}] must be an object with 'input' and "
                                      "'output'")
    return [(str(case["input"]), str(case["output"])) for case in cases]


def same_output(actual: str, expected: str) -> bool:
    got, want = actual.strip().split("\n"), expected.strip().split("\n")
    if len(got) != len(want):
        return False
    return all(_same_line(g.strip().lower(), w.strip().lower()) for g, w in zip(got, want, strict=True))


def _same_line(got: str, want: str) -> bool:
    if got == want:
        return True
    try:
        a, b = float(got), float(want)
    except ValueError:
        return False
    return abs(a - b) / max(abs(b), 1e-10) < 1e-5
