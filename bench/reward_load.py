"""Load test of the remote reward path: the bundled server and the runtime's client, both real, on 127.0.0.1,
with a share of hostile traffic mixed in.

Sends `--samples` (10,000) ordinary samples through `RemoteRewardClient` with `--max-workers` (8) requests in
flight: math samples right and wrong in several notations, and a few code samples (right, partly right,
crashing). Every verdict is checked against the one known in advance, and the server's request log is checked
for samples lost (none may be missing) or duplicated (none may be scored twice: nothing fails, so nothing is
retried). Meanwhile `--hostile-share` (10%) of all requests are hostile, sent from another process, evenly
spread over the time the ordinary ones should take: outputs
crafted to make backtracking regexes take minutes (multiple choice, `<think>`, fenced code), bodies over the
size limit, clients that stop sending halfway, and verification_info nested 100,000 deep. Each hostile request
must be answered as it should be (scored 0 quickly, 413, cut off by the read deadline, 422), and the ordinary
ones must keep their p99 latency under `--p99-limit-ms` (1,000) with no failure.

    python bench/reward_load.py [--samples 10000] [--max-workers 8] [--workers 2] [--code-every 500] \
        [--hostile-share 0.1]
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx

from rlc.reward_server.process import ServerProcess
from rlc_runtime.rewards.remote import RemoteRewardClient, RewardBatch

MATH_FORMS = [  # (how the model writes i/2, how the dataset writes it)
    ("\\boxed{{\\frac{{{i}}}{{2}}}}", "{i}/2"),
    ("\\boxed{{{h}}}", "\\frac{{{i}}}{{2}}"),
    ("\\boxed{{\\dfrac{{{i}}}{{2}}}}", "{h}"),
]
CODE_TESTS = {"type": "code_verifiable", "answer": {"test_cases": [
    {"input": "3\n5", "output": "8"}, {"input": "-10\n4", "output": "-6"}, {"input": "1\n1", "output": "2"},
    {"input": "7\n7", "output": "14"}]}}
CODE_SAMPLES = [  # (program, expected score)
    ("a = int(input())\nb = int(input())\nprint(a + b)", 1.0),
    ("a = int(input())\nb = int(input())\nprint(a + b if a > 0 else a - b)", 0.75),
    ("import sys\nsys.exit(int(input()) + 100)", 0.0),  # crashes on every case
]
# No endless programs here: each would spin a core for the whole time limit of each of its test cases, which on
# a small machine measures the time limit, not the reward path (tests/rlc/reward_server covers them).
HOSTILE_KINDS = ["choice_bait", "think_bait", "fence_bait", "huge_body", "slow_client", "nested_json"]
READ_TIMEOUT_S = 3.0
EXPECTED_RATE = 100  # ordinary samples/s, to spread the hostile requests over the run rather than burst them


def make_samples(n: int, code_every: int) -> list[tuple[str, str, float]]:
    """(llm_output, verification_info, expected score), each llm_output unique."""
    samples = []
    for i in range(n):
        if code_every and i % code_every == 0:
            program, expected = CODE_SAMPLES[(i // code_every) % len(CODE_SAMPLES)]
            output = f"Sample {i}.\n```python\n{program}\n```"
            samples.append((output, json.dumps(CODE_TESTS), expected))
            continue
        said, truth = MATH_FORMS[i % len(MATH_FORMS)]
        right = i % 2 == 0
        shown = i if right else i + 1  # a wrong answer: (i + 1) / 2
        output = f"Sample {i}. Reasoning... so the answer is {said.format(i=shown, h=shown / 2)}."
        info = json.dumps({"type": "math_verifiable", "answer": {"value": truth.format(i=i, h=i / 2)}})
        samples.append((output, info, 1.0 if right else 0.0))
    return samples


def send_hostile(url: str, port: int, kind: str, max_body_bytes: int, at: float) -> str | None:
    """One hostile request, sent at `at` (time.monotonic); None when the server answered it as it should, else
    what went wrong."""
    time.sleep(max(0.0, at - time.monotonic()))
    if kind == "slow_client":  # headers and half a body, then silence: the read deadline must close it
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(b"POST /reward HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 1000\r\n\r\n{\"llm_output\": \"")
            sock.settimeout(READ_TIMEOUT_S * 4)
            start = time.monotonic()
            try:
                while sock.recv(4096):
                    pass
            except OSError as e:
                return f"slow client: {e}"
            late = time.monotonic() - start - READ_TIMEOUT_S
            return None if late < READ_TIMEOUT_S else f"slow client held {late:.1f} s past the deadline"
    if kind == "huge_body":
        body = b'{"llm_output": "' + b"x" * (max_body_bytes + (1 << 20)) + b'", "verification_info": "{}"}'
        try:
            status = httpx.post(f"{url}/reward", content=body, timeout=30).status_code
        except httpx.TransportError:  # refused before it was all sent: the server stopped reading, as it should
            return None
        return None if status == 413 else f"huge body answered {status}"
    if kind == "nested_json":
        info = '{"type": "math_verifiable", "answer": ' + "[" * 100_000 + "]" * 100_000 + "}"
        status = httpx.post(f"{url}/reward", json={"llm_output": "x", "verification_info": info},
                            timeout=30).status_code
        return None if status == 422 else f"nested JSON answered {status}"
    output, info = {
        "choice_bait": ("answer" + " " * 100_000, {"type": "multiple_choice", "answer": {"value": "B"}}),
        "think_bait": ("<think>" * 20_000 + "\\boxed{1" * 1000, {"type": "math_verifiable", "answer": {"value": 1}}),
        "fence_bait": ("```py\n" * 20_000, {"type": "swe_verifiable", "answer": {"input": "a", "ground_truth": "b"}}),
    }[kind]
    response = httpx.post(f"{url}/reward", json={"llm_output": output, "verification_info": json.dumps(info)},
                          timeout=30)
    ok = response.status_code == 200 and response.json() == {"score": 0.0}
    return None if ok else f"{kind} answered {response.status_code} {response.text[:100]}"


@dataclass
class Report:
    batch: RewardBatch
    seconds: float
    wrong: list[int]
    lost: list[int]
    duplicated: int
    hostile: Counter
    hostile_errors: list[str]


def run(samples: list[tuple[str, str, float]], hostile_share: float, workers: int = 2, max_workers: int = 8,
        code_time_limit: float = 2.0, max_body_bytes: int = 8 << 20) -> Report:
    n_hostile = round(len(samples) * hostile_share / (1 - hostile_share))
    kinds = [HOSTILE_KINDS[i % len(HOSTILE_KINDS)] for i in range(n_hostile)]
    with tempfile.TemporaryDirectory(prefix="reward-load-") as tmp:
        log = Path(tmp) / "requests.jsonl"
        with ServerProcess(workers=workers, request_log=str(log), code_time_limit_s=code_time_limit,
                           read_timeout_s=READ_TIMEOUT_S, max_body_bytes=max_body_bytes,
                           log_path=Path(tmp) / "server.log") as server, \
                RemoteRewardClient(server.url, max_workers=max_workers, timeout=60, on_failure="zero") as client:
            warm = make_samples(4 * max_workers, code_every=0)  # every connection, every server process
            client.score([f"warm-up {s[0]}" for s in warm], [s[1] for s in warm])
            log.unlink()
            # From another process, so that building and sending them does not slow this one's client threads.
            spec = {"url": server.url, "port": server.port, "kinds": kinds, "max_body_bytes": max_body_bytes,
                    "spread_s": len(samples) / EXPECTED_RATE}
            hostile = subprocess.Popen([sys.executable, __file__, "--hostile", json.dumps(spec)],
                                       stdout=subprocess.PIPE, text=True)
            assert hostile.stdout.readline().strip() == "ready"  # it sends from now on, as the batch starts
            start = time.perf_counter()
            batch = client.score([s[0] for s in samples], [s[1] for s in samples])
            seconds = time.perf_counter() - start
            hostile_errors = json.loads(hostile.communicate(timeout=600)[0])
        seen = Counter(json.loads(line)["sample"] for line in log.read_text().splitlines())
    from rlc.reward_server.app import sample_id  # here: the hostile sender process needs none of the server

    wrong = [i for i, (s, (_, _, expected)) in enumerate(zip(batch.scores, samples, strict=True)) if s != expected]
    lost = [i for i, s in enumerate(samples) if seen[sample_id(s[0], s[1])] == 0]
    ordinary_ids = {sample_id(s[0], s[1]) for s in samples}
    duplicated = sum(count - 1 for sid, count in seen.items() if sid in ordinary_ids and count > 1)
    return Report(batch, seconds, wrong, lost, duplicated, Counter(kinds), hostile_errors)


def send_all_hostile(spec: dict) -> list[str]:
    """The hostile requests of `spec`, evenly spread over `spread_s`, 16 at a time; what went wrong with each."""
    print("ready", flush=True)
    kinds, begin = spec["kinds"], time.monotonic()
    with ThreadPoolExecutor(16, thread_name_prefix="hostile") as pool:
        outcomes = [pool.submit(send_hostile, spec["url"], spec["port"], kind, spec["max_body_bytes"],
                                begin + i * spec["spread_s"] / max(1, len(kinds))) for i, kind in enumerate(kinds)]
        return [error for error in (f.result() for f in outcomes) if error]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=10_000)
    parser.add_argument("--max-workers", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2, help="uvicorn worker processes of the server")
    parser.add_argument("--code-every", type=int, default=500, help="one code sample per this many (0: none)")
    parser.add_argument("--code-time-limit", type=float, default=2.0)
    parser.add_argument("--hostile-share", type=float, default=0.1, help="of all requests (0: none)")
    parser.add_argument("--p99-limit-ms", type=float, default=1000.0)
    parser.add_argument("--hostile", help=argparse.SUPPRESS)  # internal: the hostile sender process
    args = parser.parse_args()
    if args.hostile:
        print(json.dumps(send_all_hostile(json.loads(args.hostile))))
        return 0

    samples = make_samples(args.samples, args.code_every)
    report = run(samples, args.hostile_share, args.workers, args.max_workers, args.code_time_limit)
    batch = report.batch
    n_code = sum(1 for s in samples if "code_verifiable" in s[1])
    n_hostile = sum(report.hostile.values())
    print(f"ordinary samples {len(samples)} ({n_code} code), hostile requests {n_hostile} "
          f"({n_hostile / (n_hostile + len(samples)):.0%}: {dict(report.hostile)}), server workers {args.workers}, "
          f"client max_workers {args.max_workers}")
    print(f"wall {report.seconds:.2f} s, throughput {len(samples) / report.seconds:.0f} ordinary samples/s")
    print(f"ordinary latency p50 {batch.latency_p50_ms:.1f} ms, p90 {batch.latency_p90_ms:.1f} ms, "
          f"p99 {batch.latency_p99_ms:.1f} ms, max {max(batch.latencies_ms):.1f} ms")
    print(f"failures {batch.failures}, retries {batch.retries}, wrong verdicts {len(report.wrong)}, lost "
          f"{len(report.lost)}, duplicated {report.duplicated}, hostile answered wrongly {len(report.hostile_errors)}")
    ok = not (report.wrong or report.lost or report.duplicated or batch.failures or report.hostile_errors) \
        and batch.latency_p99_ms < args.p99_limit_ms
    print("OK: every ordinary sample got its right verdict in time, none lost or duplicated; every hostile request "
          "was answered as it should be" if ok else
          f"FAILED: first wrong {report.wrong[:5]}, first lost {report.lost[:5]}, first errors "
          f"{[e for e in batch.errors if e][:3]}, hostile {report.hostile_errors[:3]}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
