"""SandboxFusion scoring against a stand-in for the service on 127.0.0.1.

SandboxFusion is a Docker service that cannot run here, so `FakeSandbox` stands in for it: an HTTP server with the
service's `POST /run_code` (its documented request: code, stdin, language, compile_timeout, run_timeout,
memory_limit_MB; its documented reply: status Success/Failed/SandboxError, compile_result, run_result with status
Finished/TimeLimitExceeded, return_code, stdout, stderr). It really runs each program with the Python interpreter in
a temporary directory, under the run timeout and the memory limit, so the scores below come from executed code.
Markers in a program make it misbehave as a hostile or broken service would (stall, trickle, flood, 504).
Expected scores are worked by hand from verl's rule: the fraction of the first 10 test cases that pass.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from rlc.config.root import RLCConfig
from rlc_runtime.rewards.manager import RewardManager
from rlc_runtime.rewards.rules import compute_score
from rlc_runtime.rewards.sandbox_fusion import MAX_REPLY_BYTES, SandboxFusionClient, extract_program

ADD = "a, b = map(int, input().split())\nprint(a + b)\n"
CASES = {"inputs": ["1 2\n", "3 4\n", "10 -3\n"], "outputs": ["3\n", "7\n", "7\n"]}


class FakeSandbox(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, delay_s: float = 0.0) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.delay_s, self.lock, self.release = delay_s, threading.Lock(), threading.Event()
        self.in_flight = self.max_in_flight = 0
        self.requests: list[dict[str, Any]] = []
        self.seen_504: set[tuple[str, str]] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/run_code"


class _Handler(BaseHTTPRequestHandler):
    server: FakeSandbox

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with self.server.lock:
            self.server.requests.append(request)
            self.server.in_flight += 1
            self.server.max_in_flight = max(self.server.max_in_flight, self.server.in_flight)
        self.counted = True
        try:
            self._answer(request)
        finally:
            self._done()

    def _done(self) -> None:
        """The request leaves the count before its reply is written: once the client has the reply it may send the
        next request, which must not find this one still counted."""
        with self.server.lock:
            if self.counted:
                self.server.in_flight -= 1
                self.counted = False

    def _answer(self, request: dict[str, Any]) -> None:
        code = request["code"]
        if "# STALL" in code:  # accepts the request and never answers
            self.server.release.wait(30)
            return
        if "# 504ONCE" in code and (code, request["stdin"]) not in self.server.seen_504:
            self.server.seen_504.add((code, request["stdin"]))
            return self._send(504, b"gateway timeout")
        if "# TRICKLE" in code:  # a valid reply, one byte every 0.2 s: it would take minutes
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            for _ in range(100000):
                if self.server.release.wait(0.2):
                    return
                self.wfile.write(b" ")
                self.wfile.flush()
        if "# FLOOD" in code:
            return self._send(200, b'{"status": "Success", "x": "' + b"x" * (MAX_REPLY_BYTES + 10) + b'"}')
        if "# NOTJSON" in code:
            return self._send(200, b"<html>busy</html>")
        time.sleep(self.server.delay_s)
        self._send(200, json.dumps(run_python(request)).encode())

    def _send(self, status: int, body: bytes) -> None:
        self._done()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def run_python(request: dict[str, Any]) -> dict[str, Any]:
    """Run the program as SandboxFusion's python runner does and answer in its format."""
    limit = request["memory_limit_MB"] << 20

    def limit_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "main.py").write_text(request["code"])
        start = time.monotonic()
        try:
            done = subprocess.run([sys.executable, "main.py"], cwd=tmp, input=request["stdin"] or "",
                                  capture_output=True, text=True, timeout=request["run_timeout"],
                                  preexec_fn=limit_memory)
            run = {"status": "Finished", "return_code": done.returncode, "stdout": done.stdout,
                   "stderr": done.stderr}
        except subprocess.TimeoutExpired:
            run = {"status": "TimeLimitExceeded", "return_code": None, "stdout": "", "stderr": ""}
    run["execution_time"] = time.monotonic() - start
    ok = run["status"] == "Finished" and run["return_code"] == 0
    return {"status": "Success" if ok else "Failed", "message": "", "compile_result": None, "run_result": run,
            "executor_pod_name": None, "files": {}}


@pytest.fixture
def sandbox() -> Iterator[FakeSandbox]:
    server = FakeSandbox()
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.release.set()
    server.shutdown()
    server.server_close()


def fenced(code: str) -> str:
    return f"Here is my solution.\n```python\n{code}```\nDone."


def scores(sandbox: FakeSandbox, completions: list[str], cases: list[Any], **kwargs: Any) -> list[Any]:
    client = SandboxFusionClient(sandbox.url, **kwargs)
    try:
        return client.score(completions, cases)
    finally:
        client.close()


def test_correct_wrong_and_partial_programs_score_as_verl(sandbox: FakeSandbox) -> None:
    wrong = ADD.replace("a + b", "a * b")  # 2, 12, -30: none right
    partial = ADD.replace("a + b", "abs(a) + abs(b)")  # 3, 7 right; 13 wrong
    crash = "raise SystemExit(input())\n"  # a non-zero exit is a runtime error
    results = scores(sandbox, [fenced(ADD), fenced(wrong), fenced(partial), fenced(crash), "no code at all"],
                     [CASES, json.dumps(CASES), CASES, CASES, CASES])
    assert [r.score for r in results] == [1.0, 0.0, pytest.approx(2 / 3), 0.0, 0.0]
    assert results[2].results == [True, True, False]
    assert results[3].results == [-2, -2, -2]
    assert results[4].reason == "the response has no code block"
    assert all(r.error is None for r in results)
    assert {r["memory_limit_MB"] for r in sandbox.requests} == {1024}
    assert {(r["language"], r["run_timeout"], r["compile_timeout"]) for r in sandbox.requests} == {("python", 10, 10)}


def test_only_the_first_ten_cases_count() -> None:
    """12 cases; the program doubles n below 9 and prints 0 from there: cases 0..8 pass, 9 fails -> 9/10 (over all
    twelve it would be 9/12)."""
    server = FakeSandbox()
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        program = "n = int(input())\nprint(2 * n if n < 9 else 0)\n"
        cases = {"inputs": [str(n) for n in range(12)], "outputs": [str(2 * n) for n in range(12)]}
        [result] = scores(server, [fenced(program)], [cases])
        assert result.score == pytest.approx(0.9)
        assert len(server.requests) == 10
    finally:
        server.shutdown()
        server.server_close()


def test_function_and_assert_cases(sandbox: FakeSandbox) -> None:
    fn_cases = {"fn_name": "add", "inputs": ["1\n2", "[1]\n[2]", "\"a\"\n\"b\""], "outputs": ["3", "[1, 2]", "ab"]}
    method = "class Solution:\n    def add(self, a, b):\n        return a + b\n"
    asserts = {"assert_case": ["assert add(1, 2) == 3", "assert add(2, 2) == 5"]}  # the second one fails
    uses_prelude = "def add(a, b):\n    return list(chain([a], [b]))[0] + b\n"  # itertools.chain, never imported
    results = scores(sandbox, [fenced("def add(a, b):\n    return a + b\n"), fenced(method),
                               fenced("def add(a, b):\n    return a + b\n"), fenced(uses_prelude)],
                     [fn_cases, fn_cases, asserts, {"fn_name": "add", "inputs": ["1\n2"], "outputs": ["3"]}])
    assert [r.score for r in results] == [1.0, 1.0, 0.5, 1.0]


def test_code_extraction_follows_verl() -> None:
    assert extract_program("```python\nx = 1\n```\n```python\ny = 2\n```") == "\ny = 2\n"  # the last python block
    assert extract_program("```py\nz = 3\n```") == "z = 3\n"  # a language word on the fence line is dropped
    assert extract_program("```\nprint(1)\n```") == "\nprint(1)\n"
    assert extract_program("print(1)") is None


def test_unusable_test_cases_score_zero_with_a_reason(sandbox: FakeSandbox) -> None:
    unusable = ["{not json", {"inputs": ["1"]}, {"inputs": ["1", "2"], "outputs": ["1"]}, {"inputs": [], "outputs": []}]
    results = scores(sandbox, [fenced(ADD)] * 4, unusable)
    assert [r.score for r in results] == [0.0] * 4
    assert all(r.reason for r in results)
    assert sandbox.requests == []


def test_a_stalled_service_scores_zero_in_bounded_time_and_the_rest_still_score(sandbox: FakeSandbox) -> None:
    start = time.monotonic()
    results = scores(sandbox, [fenced("# STALL\n"), fenced("# TRICKLE\n"), fenced(ADD)], [CASES, CASES, CASES],
                     case_timeout_s=1.0, api_timeout_s=0.2)  # a request may take 1 + 1 + 0.2 s
    elapsed = time.monotonic() - start
    assert [r.score for r in results] == [0.0, 0.0, 1.0]  # all were in flight before any timed out
    assert "did not answer within 2.2 s" in results[0].error
    assert "deadline" in results[1].error
    assert elapsed < 5.0


def test_a_service_that_answers_nothing_costs_the_batch_about_one_timeout(sandbox: FakeSandbox) -> None:
    """6 samples x 3 cases, 2 in flight, each request given up after 0.6 s: waiting out every request would take 9
    rounds (5.4 s); after 3 unanswered in a row (the second round) the rest fail at once."""
    start = time.monotonic()
    results = scores(sandbox, [fenced("# STALL\n")] * 6, [CASES] * 6, max_concurrent=2, case_timeout_s=0.2,
                     api_timeout_s=0.2)
    elapsed = time.monotonic() - start
    assert [r.score for r in results] == [0.0] * 6
    assert len(sandbox.requests) == 4
    assert "3 requests in a row unanswered" in results[-1].error
    assert elapsed < 2.5


def test_hostile_replies_fail_their_case_and_a_504_is_retried(sandbox: FakeSandbox) -> None:
    results = scores(sandbox, [fenced("# FLOOD\n"), fenced("# NOTJSON\n"), fenced("# 504ONCE\n" + ADD)],
                     [CASES, CASES, CASES], retry_delay_s=0.01)
    assert [r.score for r in results] == [0.0, 0.0, 1.0]
    assert "over" in results[0].error and "not JSON" in results[1].error
    assert sum("# 504ONCE" in r["code"] for r in sandbox.requests) == 3 + 3  # each case: one 504, one answer


def test_max_concurrent_bounds_requests_in_flight(sandbox: FakeSandbox) -> None:
    sandbox.delay_s = 0.15
    results = scores(sandbox, [fenced(ADD)] * 4, [CASES] * 4, max_concurrent=3, memory_limit_mb=512)
    assert [r.score for r in results] == [1.0] * 4
    assert sandbox.max_in_flight == 3  # 12 requests, never more than 3 at once, and 3 reached
    assert {r["memory_limit_MB"] for r in sandbox.requests} == {512}


def test_the_reward_manager_sends_code_sources_to_the_sandbox(sandbox: FakeSandbox) -> None:
    config = {"algorithm": {"adv_estimator": "grpo"}, "data": {"train_files": "x.parquet", "train_batch_size": 4},
              "actor_rollout_ref": {"model": {"path": "m"}},
              "reward_model": {"sandbox_fusion": {"url": sandbox.url, "max_concurrent": 4}}}
    manager = RewardManager(RLCConfig.model_validate(config))
    samples = [{"data_source": "codecontests", "response": fenced(ADD), "ground_truth": json.dumps(CASES)},
               {"data_source": "taco", "response": fenced("# STALL\n"), "ground_truth": CASES},
               {"data_source": "openai/gsm8k", "response": "so #### 72", "ground_truth": "72"}]
    assert (manager.sandbox.url, manager.sandbox.max_concurrent, manager.sandbox.memory_limit_mb) == \
        (sandbox.url, 4, 1024)
    manager.sandbox.close()  # the same client with short timeouts, so that the stalled sample gives up fast
    manager.sandbox = SandboxFusionClient(sandbox.url, 4, case_timeout_s=1.0, api_timeout_s=0.2)
    got, metrics, _ = manager.score(samples, step=1)
    assert got == [1.0, 0.0, 1.0]
    assert metrics["reward/sandbox_fusion/failed_samples"] == 1.0
    assert len(sandbox.requests) == 6


def test_without_a_sandbox_a_code_source_is_refused_not_compared_as_text() -> None:
    with pytest.raises(ValueError, match="sandbox_fusion.url"):
        compute_score("apps", fenced(ADD), json.dumps(CASES))
