"""Load test of the remote reward path: the bundled server and the runtime's client, both real, on 127.0.0.1.

Sends `--samples` (10,000) samples through `RemoteRewardClient` with `--max-workers` (64) requests in flight: math
samples right and wrong in several notations, and a few code samples (right, partly right, crashing). Every
verdict is checked against the one known in advance, and the server's request log is checked for samples lost
(none may be missing) or duplicated (none may be scored twice: nothing fails, so nothing is retried). Prints
throughput and the client's latency percentiles.

    python bench/reward_load.py [--samples 10000] [--max-workers 64] [--workers 2] [--code-every 500]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from rlc.reward_server.app import sample_id
from rlc.reward_server.process import ServerProcess
from rlc_runtime.rewards.remote import RemoteRewardClient

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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=10_000)
    parser.add_argument("--max-workers", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2, help="uvicorn worker processes of the server")
    parser.add_argument("--code-every", type=int, default=500, help="one code sample per this many (0: none)")
    parser.add_argument("--code-time-limit", type=float, default=2.0)
    args = parser.parse_args()

    samples = make_samples(args.samples, args.code_every)
    with tempfile.TemporaryDirectory(prefix="reward-load-") as tmp:
        log = Path(tmp) / "requests.jsonl"
        with ServerProcess(workers=args.workers, request_log=str(log), code_time_limit_s=args.code_time_limit,
                           log_path=Path(tmp) / "server.log") as server, \
                RemoteRewardClient(server.url, max_workers=args.max_workers, timeout=60,
                                   on_failure="zero") as client:
            client.score([samples[0][0]], [samples[0][1]])  # warm up each connection's first request path
            log.unlink()
            start = time.perf_counter()
            batch = client.score([s[0] for s in samples], [s[1] for s in samples])
            seconds = time.perf_counter() - start
        seen = Counter(json.loads(line)["sample"] for line in log.read_text().splitlines())

    wrong = [i for i, (s, expected) in enumerate(zip(batch.scores, (s[2] for s in samples), strict=True))
             if s != expected]
    lost = [i for i, s in enumerate(samples) if seen[sample_id(s[0], s[1])] == 0]
    duplicated = sum(count - 1 for count in seen.values() if count > 1)
    n_code = sum(1 for s in samples if "code_verifiable" in s[1])
    print(f"samples {len(samples)} ({n_code} code), server workers {args.workers}, client max_workers "
          f"{args.max_workers}")
    print(f"wall {seconds:.2f} s, throughput {len(samples) / seconds:.0f} samples/s")
    print(f"latency p50 {batch.latency_p50_ms:.1f} ms, p90 {batch.latency_p90_ms:.1f} ms, "
          f"p99 {batch.latency_p99_ms:.1f} ms, max {max(batch.latencies_ms):.1f} ms")
    print(f"failures {batch.failures}, retries {batch.retries}, wrong verdicts {len(wrong)}, lost {len(lost)}, "
          f"duplicated {duplicated}")
    ok = not (wrong or lost or duplicated or batch.failures) and sum(seen.values()) == len(samples)
    print("OK: every sample got its right verdict, none lost, none duplicated" if ok else
          f"FAILED: first wrong {wrong[:5]}, first lost {lost[:5]}, first errors "
          f"{[e for e in batch.errors if e][:3]}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
