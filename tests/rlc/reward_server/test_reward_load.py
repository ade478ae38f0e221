"""The bounded CI run of bench/reward_load.py: ordinary samples through the real client and server while 10% of
the requests are hostile (regex bait, bodies over the limit, clients that stop sending, JSON nested 100,000
deep). Every ordinary verdict is checked against the one known when the sample was made, none may fail, be
lost or be scored twice, their p99 latency stays under 1 s, and each hostile request is answered as it should
be (scored 0, 413, cut off, 422)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[3] / "bench" / "reward_load.py"
_spec = importlib.util.spec_from_file_location("reward_load", BENCH)
reward_load = sys.modules[_spec.name] = importlib.util.module_from_spec(_spec)  # a dataclass needs it registered
_spec.loader.exec_module(reward_load)


def test_hostile_traffic_leaves_ordinary_requests_fast_and_right():
    samples = reward_load.make_samples(400, code_every=0)
    report = reward_load.run(samples, hostile_share=0.1, workers=2, max_workers=8)
    assert sum(report.hostile.values()) == 44 and set(report.hostile) == set(reward_load.HOSTILE_KINDS)
    assert report.hostile_errors == []
    assert (report.batch.failures, report.wrong, report.lost, report.duplicated) == (0, [], [], 0)
    assert report.batch.latency_p99_ms < 1000, report.batch.latency_p99_ms
