"""The remote reward client against the bundled server, both real, over HTTP on 127.0.0.1: order, retries,
failure modes, a server killed and restarted mid-batch, and the atomic JSONL record."""

from __future__ import annotations

import asyncio
import json
import pickle
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from rlc.config.reward import RewardAPI
from rlc.reward_server.app import sample_id
from rlc.reward_server.process import ServerProcess, free_port
from rlc_runtime.rewards.remote import RemoteRewardClient, RewardAPIError, RewardBatch, save_jsonl


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("remote")
    with ServerProcess(code_time_limit_s=1.0, log_path=tmp / "server.log") as server:
        yield server


def math_sample(i: int) -> tuple[str, str, float]:
    """A unique output with a known verdict: right unless i is a multiple of 3."""
    value = i if i % 3 else i + 1
    return (f"sample {i}: so \\boxed{{{i}}}", json.dumps({"type": "math_verifiable", "answer": {"value": str(value)}}),
            1.0 if i % 3 else 0.0)


CODE = "```python\nprint(int(input()) * 2)\n```"
CODE_INFO = {"type": "code_verifiable", "answer": {"test_cases": [{"input": "2", "output": "4"},
                                                                  {"input": "5", "output": "11"}]}}
UNSUPPORTED = json.dumps({"type": "chess_verifiable", "answer": {"fen": "8/8/8/8/8/8/8/8 w - - 0 1"}})


def test_scores_come_back_in_input_order(server):
    samples = [math_sample(i) for i in range(40)]
    outputs, infos, expected = (list(column) for column in zip(*samples, strict=True))
    for i in range(0, 40, 8):  # slow code samples among fast math ones: replies arrive out of order
        outputs[i], infos[i], expected[i] = CODE, CODE_INFO, 0.5  # a dict: sent as its JSON text
    with RemoteRewardClient(server.url, max_workers=8, timeout=10) as client:
        batch = client.score(outputs, infos)
    assert batch.scores == expected
    assert batch.replies == [{"score": s} for s in expected]
    assert (batch.failures, batch.retries, batch.errors) == (0, 0, [None] * 40)
    metrics = batch.metrics()
    assert set(metrics) == {"reward_api/failures", "reward_api/retries", "reward_api/latency_p50_ms",
                            "reward_api/latency_p90_ms", "reward_api/latency_p99_ms"}
    assert 0 < metrics["reward_api/latency_p50_ms"] <= metrics["reward_api/latency_p90_ms"] \
        <= metrics["reward_api/latency_p99_ms"] <= max(batch.latencies_ms)


def test_a_422_is_not_retried_and_zero_mode_scores_it_0(server):
    right, info, _ = math_sample(1)
    with RemoteRewardClient(server.url, max_workers=4, on_failure="zero", backoff_base=0.01) as client:
        batch = client.score([right, "x", "y", right], [info, UNSUPPORTED, None, info])
    assert batch.scores == [1.0, 0.0, 0.0, 1.0]
    assert (batch.failures, batch.retries) == (2, 0)
    assert batch.errors[1].startswith("HTTP 422: ") and "'chess_verifiable' is not supported" in batch.errors[1]
    assert batch.replies[1] == {"error": batch.errors[1]}
    assert "no verification_info" in batch.errors[2]


def test_error_mode_raises_naming_how_many_failed_and_the_first_error(server):
    right, info, _ = math_sample(1)
    with RemoteRewardClient(server.url, max_workers=4) as client, pytest.raises(RewardAPIError) as e:
        client.score([right, "x", "y"], [info, UNSUPPORTED, UNSUPPORTED])
    assert "2 of 3 samples" in str(e.value) and "sample 1: HTTP 422" in str(e.value)
    assert e.value.batch.scores[0] == 1.0  # what was scored is kept for the caller


def test_connection_refused_is_retried_with_backoff_then_counted():
    dead = f"http://127.0.0.1:{free_port()}"
    start = time.monotonic()
    with RemoteRewardClient(dead, max_workers=2, max_retries=2, on_failure="zero", backoff_base=0.05) as client:
        batch = client.score(["a", "b"], ['{"type": "exact_match", "answer": {"value": "a"}}'] * 2)
    assert batch.scores == [0.0, 0.0] and batch.failures == 2 and batch.retries == 4
    assert all("ConnectError" in e and "after 3 attempts" in e for e in batch.errors)
    assert time.monotonic() - start < 2.0  # backoff is bounded by 0.05 * (1 + 2) per sample


def test_timeouts_are_retried(server):
    endless = "```python\nwhile True: pass\n```"
    with RemoteRewardClient(server.url, max_workers=1, timeout=0.3, max_retries=1, on_failure="zero",
                            backoff_base=0.01) as client:
        batch = client.score([endless], [CODE_INFO])
    assert batch.failures == 1 and batch.retries == 1
    assert "ReadTimeout" in batch.errors[0] and "after 2 attempts" in batch.errors[0]


def test_server_killed_and_restarted_mid_batch_loses_and_duplicates_nothing(tmp_path):
    n, workers, log = 600, 8, tmp_path / "requests.jsonl"
    samples = [math_sample(i) for i in range(n)]
    port = free_port()
    server = ServerProcess(port=port, request_log=str(log), log_path=tmp_path / "server.log").start()
    client = RemoteRewardClient(server.url, max_workers=workers, timeout=5, max_retries=8, backoff_base=0.1)
    try:
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(client.score, [s[0] for s in samples], [s[1] for s in samples])
            while not log.exists() or len(log.read_text().splitlines()) < 100:
                time.sleep(0.005)
            server.kill()
            scored_before_kill = len(log.read_text().splitlines())
            server = ServerProcess(port=port, request_log=str(log), log_path=tmp_path / "server2.log").start()
            batch = pending.result(timeout=60)
    finally:
        client.close()
        server.stop()
    assert scored_before_kill < n  # the kill landed mid-batch
    assert batch.scores == [s[2] for s in samples] and batch.failures == 0 and batch.retries > 0
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert len({r["pid"] for r in records}) == 2
    seen = Counter(r["sample"] for r in records)
    assert set(seen) == {sample_id(s[0], s[1]) for s in samples}  # every sample reached a server
    # Only a request in flight at the kill can have been scored twice (its reply was lost): at most `workers`.
    assert sum(seen.values()) - n <= workers


def test_usable_from_config_threads_an_event_loop_and_a_pickle(server):
    api = RewardAPI(enable=True, api_url=server.url, max_workers=4, timeout=10, on_failure="zero")
    client = RemoteRewardClient.from_config(api)
    assert (client.max_workers, client.on_failure) == (4, "zero")

    async def inside_loop() -> RewardBatch:  # as in an async Ray actor: a blocking call, no loop of its own
        return client.score([math_sample(2)[0]], [math_sample(2)[1]])

    assert asyncio.run(inside_loop()).scores == [1.0]
    copy = pickle.loads(pickle.dumps(client))  # as when handed to a Ray actor: same settings, own connections
    assert (copy.api_url, copy.on_failure) == (client.api_url, "zero") and copy.score(["p"], [
        '{"type": "exact_match", "answer": {"value": "p"}}']).scores == [1.0]
    copy.close()
    results = []
    threads = [threading.Thread(target=lambda: results.append(client.score(["p"], [
        '{"type": "exact_match", "answer": {"value": "p"}}']).scores)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [[1.0]] * 4
    client.close()


def _batch(scores: list[float]) -> RewardBatch:
    return RewardBatch(scores=scores, replies=[{"score": s} for s in scores], errors=[None] * len(scores),
                       failures=0, retries=0, latencies_ms=[1.0] * len(scores))


def test_save_jsonl_writes_one_record_per_sample(tmp_path):
    path = save_jsonl(tmp_path / "debug" / "rewards_step_3.jsonl", ["p0", "p1"], ["r0", "r1"],
                      [{"value": "1"}, "2"], _batch([1.0, 0.0]), step=3)
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert records[1] == {"step": 3, "index": 1, "prompt": "p1", "response": "r1", "ground_truth": "2",
                          "score": 0.0, "reply": {"score": 0.0}, "error": None}
    assert [p.name for p in path.parent.iterdir()] == ["rewards_step_3.jsonl"]
    assert RemoteRewardClient.save_jsonl is save_jsonl


def test_save_jsonl_never_leaves_half_a_file(tmp_path):
    path = tmp_path / "rewards.jsonl"
    save_jsonl(path, ["p"], ["r"], ["g"], _batch([1.0]), step=1)
    before = path.read_bytes()

    class Unprintable:
        def __str__(self) -> str:
            raise RuntimeError("cannot serialise")

    # The second record fails after the first was written: the old file stays whole and no temp file remains.
    with pytest.raises(RuntimeError, match="cannot serialise"):
        save_jsonl(path, ["p", "q"], ["r", "s"], ["g", Unprintable()], _batch([1.0, 0.0]), step=2)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["rewards.jsonl"]
    with pytest.raises(ValueError, match="1 prompts, 2 responses"):
        save_jsonl(path, ["p"], ["r", "s"], ["g", "h"], _batch([1.0, 0.0]), step=3)


def test_bad_settings_are_refused_clearly():
    with pytest.raises(ValueError, match="api_url must start with http"):
        RemoteRewardClient("localhost:8000")
    with pytest.raises(ValueError, match="on_failure must be 'error' or 'zero'"):
        RemoteRewardClient("http://127.0.0.1:1", on_failure="ignore")
    with pytest.raises(ValueError, match="2 outputs but 1 verification_infos"):
        RemoteRewardClient("http://127.0.0.1:1").score(["a", "b"], ["{}"])


def test_latency_percentiles_of_a_known_sample():
    batch = RewardBatch(scores=[0.0] * 101, replies=[{}] * 101, errors=[None] * 101, failures=0, retries=0,
                        latencies_ms=[float(v) for v in range(101)])
    assert (batch.latency_p50_ms, batch.latency_p90_ms, batch.latency_p99_ms) == (50.0, 90.0, 99.0)


def test_written_paths_are_strings_or_paths(tmp_path):
    assert save_jsonl(str(tmp_path / "a.jsonl"), [], [], [], _batch([]), step=0) == Path(tmp_path / "a.jsonl")


def test_one_bad_string_never_fails_its_batch(server, tmp_path):
    exact = json.dumps({"type": "exact_match", "answer": {"value": "caf\ufffd"}})
    bad_info = '{"type": "exact_match", "answer": {"value": "\\ud800"}}'  # the dataset's lone surrogate
    right, info, _ = math_sample(1)
    outputs = [right, "caf\ud800", right, 12345]  # a lone surrogate in a model output; not text at all
    with RemoteRewardClient(server.url, max_workers=4, on_failure="zero") as client:
        batch = client.score(outputs, [info, exact, bad_info, info])
    # The surrogate becomes U+FFFD, as a UTF-8 decoder would make it, and the sample is scored like any other.
    assert batch.scores == [1.0, 1.0, 0.0, 0.0] and batch.failures == 2
    assert "HTTP 422" in batch.errors[2] and "lone surrogate" in batch.errors[2]
    assert "not text" in batch.errors[3]
    path = save_jsonl(tmp_path / "r.jsonl", ["p"] * 4, outputs, ["g"] * 4, batch, step=1)
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert records[1]["response"] == "caf\ud800" and records[1]["score"] == 1.0  # saved as its JSON escape


def test_the_bearer_token_comes_from_the_environment(tmp_path, monkeypatch):
    exact = '{"type": "exact_match", "answer": {"value": "p"}}'
    with ServerProcess(token="s3cret-token", log_path=tmp_path / "server.log") as guarded:
        with RemoteRewardClient(guarded.url, max_workers=1, on_failure="zero") as client:
            refused = client.score(["p"], [exact])
        monkeypatch.setenv("RLC_REWARD_TOKEN", "s3cret-token")
        with RemoteRewardClient(guarded.url, max_workers=1) as client:
            accepted = client.score(["p"], [exact])
    assert refused.failures == 1 and refused.errors[0].startswith("HTTP 401")
    assert accepted.scores == [1.0] and accepted.failures == 0
    assert "s3cret-token" not in (tmp_path / "server.log").read_text()
