"""What isolating a submitted program costs: the same tiny program (echo one line of stdin) run in the reward
server's sandbox (bubblewrap, a cgroup per run) and without it (the --allow-unsafe-code path: only rlimits),
interleaved so that the machine's load affects both alike. Prints the median and spread per run, in ms.

    python bench/sandbox_overhead.py [--runs 40]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from rlc.reward_server.sandbox import Limits, _execute, isolation


def once(isolated: bool) -> float:
    start = time.perf_counter()
    result = _execute("print(input())", "7", Limits(time_s=10), [], isolated)
    elapsed = (time.perf_counter() - start) * 1000
    if result.stdout != "7\n":
        sys.exit(f"the program did not run: {result}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=40)
    runs = parser.parse_args().runs
    report = isolation()
    if not report["isolated"]:
        sys.exit(f"this host does not isolate programs: {report['not_isolated']} ({report.get('reason', '')})")
    once(True), once(False)  # warm the page cache
    times: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(runs):
        for isolated in (True, False):
            times[isolated].append(once(isolated))
    for isolated, label in ((False, "rlimits only"), (True, "sandboxed")):
        ts = sorted(times[isolated])
        print(f"{label:>12}: median {statistics.median(ts):6.1f} ms   p10 {ts[len(ts) // 10]:6.1f}   "
              f"p90 {ts[len(ts) * 9 // 10]:6.1f}")


if __name__ == "__main__":
    main()
