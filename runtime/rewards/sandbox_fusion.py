"""verl's SandboxFusion scoring: a code-contest response runs against its test cases on a SandboxFusion service.

What verl does (`verl.utils.reward_score.sandbox_fusion`, called by `default_compute_score` with
`continuous=True`), and so what this module does:
- The program is the last ```python block of the response; without one, the first ``` block (a first line that is
  a bare word, a language name, is dropped); without any block the score is 0.
- The test cases are the row's ground truth: a dict (or its JSON) with `inputs` and `outputs`, optionally
  `fn_name` (the program defines that function, or a `Solution` method; each input is its arguments, one JSON value
  per line, and what it returns is printed) or `assert_case` (one assertion appended to the program per case; its
  inputs default to empty and its expected outputs to none, so passing means exiting 0).
- Each case is one `POST url` (the full endpoint, verl's `.../run_code`) with `code`, `stdin`, `language: python`,
  `compile_timeout` and `run_timeout` of 10 s and `memory_limit_MB` (`sandbox_fusion.memory_limit_mb`). A case
  passes when the service says `Success`, its run `Finished`, and stdout equals the expected output up to trailing
  newlines (or none is expected). The score is the fraction of the first 10 cases that pass.
- Only a 504 is retried (3 attempts, 1 s then 2 s apart); any other failure is that case's failure at once.
- After the first case that failed to compile, the later cases count as compile failures too.
- Requests in flight, over the whole batch, never exceed `sandbox_fusion.max_concurrent` (verl: a semaphore).

Where rlc differs, and why:
- Only the first 10 cases are sent: they are the only ones the score reads, so the result is the same for less of
  the service's time.
- The service's reply is hostile input: a request takes at most `compile + run + 10` s (verl's own request timeout)
  however slowly the bytes arrive, a reply over `MAX_REPLY_BYTES` or not a JSON object fails the case, and the
  whole batch has a hard deadline beyond which unanswered cases fail. Once max(max_concurrent, 3) requests in a row
  go unanswered (refused, timed out, stalled), the service is taken to be down for the rest of the batch, whose
  cases then fail at once: a dead service costs a step about one request timeout, not one per round of requests.
  A failed case scores as not passed, with its reason kept (`SandboxScore.error`) and logged; training goes on.
- Plain threads over one pooled `httpx.Client` (the reward API client's design, `rlc_runtime.rewards.remote`): the
  pool's `max_concurrent` threads bound the requests in flight without a separate semaphore.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

import httpx

logger = logging.getLogger(__name__)

CASE_TIMEOUT_S = 10.0  # verl's compile and run timeout per case (compute_score's `timeout`)
API_TIMEOUT_S = 10.0  # verl's allowance for the service itself, on top of compile + run
MAX_ATTEMPTS = 3  # verl retries a 504 only
RETRY_DELAY_S = 1.0  # verl waits 1 s, then 2 s
SCORED_CASES = 10  # verl's `continuous=True`: the score reads the first 10 cases
NO_CODE_BLOCK = "the response has no code block"
MAX_REPLY_BYTES = 8 << 20  # a reply holds the program's stdout and stderr; past this it is not an answer
PASSED, WRONG, API_ERROR, RUNTIME_ERROR, TIMEOUT, COMPILE_ERROR = True, False, -1, -2, -3, -4  # verl's codes

_FN_WRAPPER = '''{program}

import json as _rlc_json
import sys as _rlc_sys
import traceback as _rlc_traceback


def _rlc_target():
    if {fn_name!r} in globals():
        return globals()[{fn_name!r}]
    if "Solution" in globals():
        return getattr(globals()["Solution"](), {fn_name!r})
    return None


def _rlc_main():
    raw = _rlc_sys.stdin.read()
    try:
        args = [_rlc_json.loads(line) for line in raw.split("\\n")] if raw.strip() else []
    except ValueError as error:
        _rlc_sys.stderr.write(f"invalid JSON arguments: {{error}}\\n")
        return
    try:
        target = _rlc_target()
        if not target:
            _rlc_sys.stderr.write("function " + {fn_name!r} + " not found\\n")
            return
        result = target(*args)
    except Exception:
        _rlc_sys.stderr.write(_rlc_traceback.format_exc())
        return
    if isinstance(result, (dict, list, tuple, bool)) or result is None:
        print(_rlc_json.dumps(result))
    else:
        print(str(result))


if __name__ == "__main__":
    _rlc_main()
'''
# The names verl's wrapper makes global before the program, so that a program using `defaultdict` or `List`
# without importing it runs there, and so here.
_PRELUDE_MODULES = ("string", "re", "datetime", "collections", "heapq", "bisect", "copy", "math", "random",
                    "statistics", "itertools", "functools", "operator", "io", "sys", "json", "builtins", "typing")
_PRELUDE = "".join(f"from {m} import *\n" for m in _PRELUDE_MODULES) + \
    "".join(f"import {m}\n" for m in _PRELUDE_MODULES if m not in ("builtins", "typing"))


@dataclass(frozen=True)
class Case:
    program: str
    stdin: str | None
    expected: Any  # None: passing is running to the end


@dataclass
class SandboxScore:
    """One response's score; each scored case's verl code (True, False, -1..-4); `error`: why the service failed
    to run some cases; `reason`: why nothing ran (no code block in the response, unusable test cases)."""

    score: float
    results: list[Any]
    error: str | None = None
    reason: str | None = None


def extract_program(completion: str) -> str | None:
    """The code verl runs: the last ```python block, else the first ``` block; None when there is no block."""
    if "```python" in completion:
        return completion.split("```python")[-1].split("```")[0]
    if "```" not in completion:
        return None
    block = completion.split("```")[1]
    first, newline, rest = block.partition("\n")
    return rest if newline and first.strip().isalpha() else block


def parse_cases(program: str, test_cases: Any) -> list[Case] | str:
    """The first SCORED_CASES cases to run, or why the test cases cannot be used (verl then scores 0)."""
    if isinstance(test_cases, str | bytes):
        try:
            test_cases = json.loads(test_cases)
        except ValueError:
            return "the test cases are not valid JSON"
    if not isinstance(test_cases, Mapping):
        return f"the test cases are {type(test_cases).__name__}, not a dict with inputs and outputs"
    cases = dict(test_cases)
    asserts = _as_list(cases.get("assert_case"))
    if asserts is not None:  # assertions alone: each case is "runs to the end", with no input
        cases.setdefault("inputs", [""] * len(asserts))
        cases.setdefault("outputs", [None] * len(asserts))
    inputs, outputs = _as_list(cases.get("inputs")), _as_list(cases.get("outputs"))
    if inputs is None or outputs is None:
        return "the test cases have no inputs and outputs lists"
    asserts = [""] * len(inputs) if asserts is None else asserts
    if not inputs:
        return "the test cases are empty"
    if not len(inputs) == len(outputs) == len(asserts):
        return f"{len(inputs)} inputs, {len(outputs)} outputs and {len(asserts)} assert cases"
    fn_name = cases.get("fn_name")
    return [Case(_program(f"{program}\n\n{asserts[i]}", fn_name), None if inputs[i] is None else str(inputs[i]),
                 outputs[i]) for i in range(min(len(inputs), SCORED_CASES))]


def _as_list(value: Any) -> list[Any] | None:
    if isinstance(value, list | tuple):
        return list(value)
    listed = value.tolist() if hasattr(value, "tolist") else None  # a numpy array from a parquet column
    return listed if isinstance(listed, list) else None


def _program(code: str, fn_name: Any) -> str:
    if not fn_name:
        return code
    return _PRELUDE + _FN_WRAPPER.format(program=code, fn_name=str(fn_name))


def verdict(reply: Mapping[str, Any], expected: Any) -> tuple[Any, str | None]:
    """verl's code for one case from the service's reply, and a reason when the service could not run it."""
    status = reply.get("status")
    compiled = reply.get("compile_result") if isinstance(reply.get("compile_result"), Mapping) else None
    run = reply.get("run_result") if isinstance(reply.get("run_result"), Mapping) else None
    if status == "SandboxError":
        return API_ERROR, f"SandboxError: {str(reply.get('message'))[:200]}"
    if status == "Success":
        if run and run.get("status") == "Finished":
            stdout = run.get("stdout")
            out = "" if stdout is None else str(stdout)
            passed = expected is None or out.rstrip("\n") == str(expected).rstrip("\n")
            return (PASSED if passed else WRONG), None
        return API_ERROR, "the service said Success, but the run did not finish"
    if status != "Failed":
        return API_ERROR, f"unknown status {str(status)[:50]!r}"
    if compiled and (compiled.get("status") in ("Error", "TimeLimitExceeded")
                     or (compiled.get("status") == "Finished" and compiled.get("return_code") != 0)):
        return COMPILE_ERROR, None
    if not run:
        return API_ERROR, "the service said Failed without a compile or run result"
    if run.get("status") == "TimeLimitExceeded":
        return TIMEOUT, None
    if run.get("status") == "Error" or (run.get("status") == "Finished" and run.get("return_code") != 0):
        return RUNTIME_ERROR, None
    return API_ERROR, f"unknown run status {str(run.get('status'))[:50]!r}"


def score_of(results: list[Any]) -> list[Any]:
    """verl's results after its compile-error rule: every case after the first compile failure fails to compile."""
    first = next((i for i, r in enumerate(results) if r == COMPILE_ERROR), None)  # True/False are 1/0, never -4
    return results if first is None else results[:first + 1] + [COMPILE_ERROR] * (len(results) - first - 1)


class SandboxFusionClient:
    """`score(completions, test_cases) -> [SandboxScore]` against a SandboxFusion `/run_code` endpoint."""

    def __init__(self, url: str, max_concurrent: int = 64, memory_limit_mb: int = 1024, *,
                 case_timeout_s: float = CASE_TIMEOUT_S, api_timeout_s: float = API_TIMEOUT_S,
                 max_attempts: int = MAX_ATTEMPTS, retry_delay_s: float = RETRY_DELAY_S) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"sandbox_fusion.url must start with http:// or https://, got {url!r}")
        if max_concurrent < 1 or memory_limit_mb < 1:
            raise ValueError(f"sandbox_fusion: need max_concurrent >= 1 and memory_limit_mb >= 1, got "
                             f"{max_concurrent} and {memory_limit_mb}")
        self.url, self.max_concurrent, self.memory_limit_mb = url, max_concurrent, memory_limit_mb
        self.case_timeout_s, self.max_attempts, self.retry_delay_s = case_timeout_s, max_attempts, retry_delay_s
        self.request_timeout_s = 2 * case_timeout_s + api_timeout_s  # verl's: compile + run + the service's
        self._http = httpx.Client(timeout=self.request_timeout_s, headers={"Accept": "application/json"},
                                  limits=httpx.Limits(max_connections=max_concurrent,
                                                      max_keepalive_connections=max_concurrent))
        self._pool = ThreadPoolExecutor(max_concurrent, thread_name_prefix="sandbox-fusion")

    def score(self, completions: Sequence[Any], test_cases: Sequence[Any]) -> list[SandboxScore]:
        """One score per completion, in order; never raises for what a completion, a row or the service holds."""
        if len(completions) != len(test_cases):
            raise ValueError(f"{len(completions)} completions but {len(test_cases)} test cases")
        plans = [self._plan(c, t) for c, t in zip(completions, test_cases, strict=True)]
        jobs = [(i, j, case) for i, plan in enumerate(plans) if isinstance(plan, list) for j, case in enumerate(plan)]
        answers = self._run_all(jobs)
        return [plan if isinstance(plan, SandboxScore) else _scored([answers[i, j] for j in range(len(plan))])
                for i, plan in enumerate(plans)]

    def _plan(self, completion: Any, test_cases: Any) -> list[Case] | SandboxScore:
        program = extract_program(completion) if isinstance(completion, str) else None
        if program is None:
            return SandboxScore(0.0, [], reason=NO_CODE_BLOCK)
        cases = parse_cases(program, test_cases)
        return SandboxScore(0.0, [], reason=cases) if isinstance(cases, str) else cases

    def _run_all(self, jobs: list[tuple[int, int, Case]]) -> dict[tuple[int, int], tuple[Any, str | None]]:
        """Every case's (code, reason); a case still unanswered at the batch's deadline fails with a reason."""
        breaker = _Breaker(max(self.max_concurrent, 3))
        futures: dict[Future, tuple[int, int]] = {self._pool.submit(self._run_case, case, breaker): (i, j)
                                                  for i, j, case in jobs}
        answers: dict[tuple[int, int], tuple[Any, str | None]] = {}
        deadline = time.monotonic() + self._batch_budget_s(len(jobs))
        pending = set(futures)
        while pending and time.monotonic() < deadline:
            done, pending = wait(pending, timeout=deadline - time.monotonic(), return_when=FIRST_COMPLETED)
            for future in done:
                answers[futures[future]] = _result(future)
        for future in pending:  # its thread ends by its own timeouts; the batch does not wait for it
            future.cancel()
            answers[futures[future]] = (API_ERROR, "no answer within the batch's deadline")
        return answers

    def _batch_budget_s(self, jobs: int) -> float:
        """What the slowest legal batch takes: rounds of max_concurrent requests, each at its worst."""
        per_case = self.max_attempts * self.request_timeout_s + self.retry_delay_s * self.max_attempts ** 2
        return math.ceil(jobs / self.max_concurrent) * per_case + 5.0

    def _run_case(self, case: Case, breaker: _Breaker) -> tuple[Any, str | None]:
        timeout = _number(self.case_timeout_s)
        body = json.dumps({"compile_timeout": timeout, "run_timeout": timeout,
                           "code": _as_text(case.program), "stdin": _as_text(case.stdin),
                           "memory_limit_MB": self.memory_limit_mb, "language": "python", "files": {},
                           "fetch_files": []}).encode("ascii")
        error = "no attempt made"
        for attempt in range(self.max_attempts):
            if breaker.tripped:
                return API_ERROR, f"not sent: the service left {breaker.limit} requests in a row unanswered"
            if attempt:
                time.sleep(self.retry_delay_s * attempt)
            reply, error, retry, silent = self._post(body)
            breaker.record(silent)
            if reply is not None:
                return verdict(reply, case.expected)
            if not retry:
                break
        return API_ERROR, error

    def _post(self, body: bytes) -> tuple[dict[str, Any] | None, str, bool, bool]:
        """(the reply, or None with why; whether verl would retry; whether the service left it unanswered)."""
        deadline = time.monotonic() + self.request_timeout_s
        try:
            with self._http.stream("POST", self.url, content=body,
                                   headers={"Content-Type": "application/json"}) as response:
                if response.status_code == 504:
                    return None, "HTTP 504 (gateway timeout)", True, False
                if response.status_code != 200:
                    return None, f"HTTP {response.status_code}", False, False
                raw = _read_bounded(response, deadline)
        except httpx.TimeoutException as e:
            why = f"the service did not answer within {self.request_timeout_s:g} s ({type(e).__name__})"
            return None, why, False, True
        except httpx.TransportError as e:  # refused, reset: verl does not retry these either
            return None, f"{type(e).__name__}: {e}"[:300], False, True
        except httpx.HTTPError as e:
            return None, f"{type(e).__name__}: {e}"[:300], False, False
        except _ReplyRefused as e:
            return None, str(e), False, e.silent
        try:
            reply = json.loads(raw)
        except ValueError:
            return None, f"the reply is not JSON: {raw[:100]!r}", False, False
        if not isinstance(reply, dict):
            return None, f"the reply is a JSON {type(reply).__name__}, not an object", False, False
        return reply, "", False, False

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._http.close()

    def __reduce__(self) -> tuple[type, tuple]:  # crosses a process boundary as its settings
        return type(self), (self.url, self.max_concurrent, self.memory_limit_mb)


class _ReplyRefused(RuntimeError):
    def __init__(self, message: str, silent: bool = False) -> None:
        super().__init__(message)
        self.silent = silent  # the reply stalled, as opposed to being too big


class _Breaker:
    """One batch's count of requests in a row that the service left unanswered (refused, timed out, stalled).
    At `limit` the service is taken to be down: the batch's remaining cases fail at once, with that reason, instead
    of each waiting out its own timeout. Any answer resets the count; the next batch starts afresh."""

    def __init__(self, limit: int) -> None:
        self.limit, self.silent, self.lock = limit, 0, threading.Lock()

    @property
    def tripped(self) -> bool:
        return self.silent >= self.limit

    def record(self, silent: bool) -> None:
        with self.lock:
            self.silent = self.silent + 1 if silent else 0


def _read_bounded(response: httpx.Response, deadline: float) -> bytes:
    """The body, unless it outgrows MAX_REPLY_BYTES or trickles in past the deadline."""
    chunks, size = [], 0
    for chunk in response.iter_bytes():
        size += len(chunk)
        if size > MAX_REPLY_BYTES:
            raise _ReplyRefused(f"the reply is over {MAX_REPLY_BYTES} bytes")
        if time.monotonic() > deadline:
            raise _ReplyRefused("the reply was still arriving at the request's deadline", silent=True)
        chunks.append(chunk)
    return b"".join(chunks)


def _result(future: Future) -> tuple[Any, str | None]:
    try:
        return future.result()
    except Exception as e:  # noqa: BLE001 - a bug here is this case's failure, not the batch's
        return API_ERROR, f"{type(e).__name__}: {e}"[:300]


def _scored(answers: list[tuple[Any, str | None]]) -> SandboxScore:
    results = score_of([code for code, _ in answers])
    reasons = sorted({reason for _, reason in answers if reason})
    passed = sum(1 for r in results if r is True)
    error = f"{sum(1 for _, r in answers if r)} case(s) not run: {'; '.join(reasons)}"[:500] if reasons else None
    return SandboxScore(passed / len(results), results, error)


def _number(seconds: float) -> float | int:
    return int(seconds) if float(seconds).is_integer() else seconds  # verl sends 10, not 10.0


def _as_text(text: str | None) -> str | None:
    """`text` with each lone surrogate replaced by U+FFFD, so the ASCII JSON body always encodes."""
    if text is None:
        return None
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
