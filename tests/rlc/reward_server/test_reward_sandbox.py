"""Submitted code runs in a limited child process: loops, crashes and memory hogs score 0 quickly, leave nothing
behind, and do not stall other requests of the server. Where the host cannot isolate programs (here: a server
that finds no bwrap on its PATH) code tests are refused, and run only with --allow-unsafe-code.
(test_reward_hostile.py tries the escapes.)"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import rlc
from rlc.reward_server.process import free_port
from rlc.reward_server.sandbox import Limits, isolation, network_isolation, run_python

LIMITS = Limits(time_s=1.0, memory_mb=256, output_bytes=1 << 16)


def _sandbox_processes() -> list[str]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().decode(errors="replace")
        except OSError:
            continue
        if "rlc-sandbox-" in text or "/program/main.py" in text:
            found.append(text)
    return found


def test_a_program_reads_stdin_and_writes_stdout():
    result = run_python("import sys\nprint(sum(int(x) for x in sys.stdin.read().split()))", "1 2\n3", LIMITS)
    assert (result.status, result.stdout) == ("ok", "6\n")


def test_the_program_gets_its_arguments():
    result = run_python("import sys\nprint(sys.argv)", "", LIMITS, ["a b", "--c"])
    assert result.stdout == "['/program/main.py', 'a b', '--c']\n"


def test_this_host_isolates_programs():
    # CI runs as root on Debian with bubblewrap installed by scripts/setup.sh: everything must hold there.
    report = isolation()
    assert report["isolated"], report
    assert report["not_isolated"] == []


def test_an_endless_program_is_killed_at_the_time_limit_with_its_children():
    start = time.monotonic()
    result = run_python("import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(60)\nwhile True: pass",
                        "", LIMITS)
    assert result.status == "timeout"
    assert time.monotonic() - start < LIMITS.time_s + 1.0
    if network_isolation():  # a PID namespace ends even a child that left the process group
        deadline = time.monotonic() + 2.0  # the kernel kills the namespace's processes as its first one exits
        while _sandbox_processes() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _sandbox_processes() == []


def test_a_crash_and_a_memory_hog_fail_fast():
    crash = run_python("raise RuntimeError('boom')", "", LIMITS)
    assert crash.status == "error" and "boom" in crash.stderr
    start = time.monotonic()
    hog = run_python("chunks = []\nwhile True: chunks.append(bytearray(50 << 20))", "", LIMITS)
    assert hog.status == "error" and "MemoryError" in hog.stderr
    assert time.monotonic() - start < LIMITS.time_s


def test_output_is_capped_not_buffered_in_the_server():
    result = run_python("while True: print('x' * 1000)", "", LIMITS)
    assert result.status == "error"  # SIGXFSZ at the file size limit
    assert len(result.stdout) <= LIMITS.output_bytes


def test_limits_cannot_be_raised_by_the_program():
    result = run_python("import resource\nresource.setrlimit(resource.RLIMIT_AS, (-1, -1))", "", LIMITS)
    assert result.status == "error" and "not allowed to raise" in result.stderr


def test_the_program_gets_no_secrets_from_the_server_environment(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_secret_value")
    result = run_python("import os\nprint(sorted(os.environ))\nprint(os.environ.get('HF_TOKEN'))", "", LIMITS)
    assert "hf_secret_value" not in result.stdout and result.stdout.endswith("None\n")


def test_network_is_cut_where_the_os_allows(reward_server):
    # Connecting to the reward server itself: reachable without isolation, unreachable (lo down) with it.
    probe = (f"import socket\ns = socket.socket()\ns.settimeout(1)\n"
             f"print('open' if s.connect_ex(('127.0.0.1', {reward_server.port})) == 0 else 'blocked')")
    result = run_python(probe, "", LIMITS)
    assert result.stdout.strip() == ("blocked" if network_isolation() else "open")


@pytest.mark.parametrize("workload", ["loop", "crash", "hog"])
def test_bad_programs_score_zero_without_stalling_other_requests(reward_server, workload):
    programs = {"loop": "while True: pass",
                "crash": "import ctypes\nctypes.string_at(0)",  # a segmentation fault
                "hog": "x = bytearray(1 << 40)"}
    bad = {"llm_output": f"```python\n{programs[workload]}\n```",
           "verification_info": json.dumps({"type": "code_verifiable", "answer": {
               "test_cases": [{"input": "", "output": "1"}] * 3}})}
    good = {"llm_output": "\\boxed{7}", "verification_info": json.dumps(
        {"type": "math_verifiable", "answer": {"value": "7"}})}

    def send(body: dict) -> tuple[float, float]:
        start = time.monotonic()
        response = httpx.post(f"{reward_server.url}/reward", json=body, timeout=30)
        return response.json()["score"], time.monotonic() - start

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        bad_futures = [pool.submit(send, bad) for _ in range(2)]
        time.sleep(0.2)  # the bad programs are running now
        good_results = [pool.submit(send, good).result() for _ in range(5)]
        bad_results = [f.result() for f in bad_futures]
    assert all(s == 1.0 and seconds < 0.5 for s, seconds in good_results), good_results
    # A loop ends at the time limit (two rounds: 6 runs, 4 sandboxes at a time); a crash or a hog well before it.
    limit = reward_server.options["code_time_limit_s"]
    slowest = 2 * limit + 1.0 if workload == "loop" else limit
    assert all(s == 0.0 and seconds < slowest for s, seconds in bad_results), bad_results


@contextlib.contextmanager
def _cli_server(tmp_path: Path, *flags: str) -> Iterator[tuple[str, Path]]:
    """`rlc reward-server` with a PATH on which there is no bwrap: a host that cannot isolate programs."""
    port, log = free_port(), tmp_path / f"server-{len(flags)}.log"
    env = {"PATH": str(tmp_path), "PYTHONPATH": str(Path(rlc.__file__).resolve().parents[1])}
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-c", "from rlc.cli import main; main()", "reward-server", "--port",
                                 str(port), *flags], env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            with contextlib.suppress(httpx.HTTPError):
                httpx.get(f"{url}/ping", timeout=1)
                break
            time.sleep(0.1)
        yield url, log
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _code_request(url: str) -> httpx.Response:
    info = {"type": "code_verifiable", "answer": {"test_cases": [{"input": "2 3", "output": "5"}]}}
    program = "```python\nprint(sum(map(int, input().split())))\n```"
    return httpx.post(f"{url}/reward", json={"llm_output": program, "verification_info": json.dumps(info)},
                      timeout=30)


def test_without_isolation_code_tests_are_refused_and_ping_says_why(tmp_path: Path):
    with _cli_server(tmp_path) as (url, log):
        ping = httpx.get(f"{url}/ping").json()
        refused = _code_request(url)
        math = httpx.post(f"{url}/reward", json={"llm_output": "\\boxed{7}", "verification_info": json.dumps(
            {"type": "math_verifiable", "answer": {"value": "7"}})}, timeout=30)
    report = ping["isolation"]
    assert report["isolated"] is False and "bubblewrap" in report["reason"]
    assert report["net_namespace"] is False and ping["network_isolation"] is False
    assert "pid_namespace" in report["not_isolated"] and ping["unsafe_code_allowed"] is False
    assert refused.status_code == 422
    assert "refused" in refused.json()["detail"] and "--allow-unsafe-code" in refused.json()["detail"]
    assert math.json() == {"score": 1.0}  # the other types are unaffected
    assert "code tests are refused" in log.read_text()


def test_allow_unsafe_code_runs_them_anyway_and_says_so_loudly(tmp_path: Path):
    with _cli_server(tmp_path, "--allow-unsafe-code") as (url, log):
        ping = httpx.get(f"{url}/ping").json()
        scored = _code_request(url)
    assert ping["unsafe_code_allowed"] is True and ping["isolation"]["isolated"] is False
    assert scored.json() == {"score": 1.0}
    assert f"UNSAFE: --allow-unsafe-code: code tests run WITHOUT isolation, as uid {os.getuid()}" in log.read_text()
