"""A server that stays up, tried as a hostile client would, against a real `rlc reward-server` on 127.0.0.1:
the bearer token, the body limit, slow and idle clients, the connection cap, a verifier past its deadline, an
output over the length cap; /ping answers within a second throughout."""

from __future__ import annotations

import json
import random
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from rlc.reward_server.process import ServerProcess

TOKEN = "t0ken-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
READ_TIMEOUT_S = 1.0
MAX_CONNECTIONS = 40


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp: Path = tmp_path_factory.mktemp("guarded")
    with ServerProcess(token=TOKEN, verifier_workers=2, verifier_timeout_s=1.0, max_body_bytes=64 << 10,
                       max_output_chars=20_000, read_timeout_s=READ_TIMEOUT_S, max_connections=MAX_CONNECTIONS,
                       log_path=tmp / "server.log") as server:
        yield server
    assert TOKEN not in (tmp / "server.log").read_text()


def post(server: ServerProcess, output: str, info: dict, headers: dict | None = None) -> httpx.Response:
    body = {"llm_output": output, "verification_info": json.dumps(info)}
    return httpx.post(f"{server.url}/reward", json=body, headers=AUTH if headers is None else headers, timeout=30)


def ping_s(server: ServerProcess) -> float:
    start = time.perf_counter()
    assert httpx.get(f"{server.url}/ping", timeout=5).status_code == 200
    return time.perf_counter() - start


EXACT = {"type": "exact_match", "answer": {"value": "yes"}}


def test_reward_needs_the_token_and_ping_does_not(guarded):
    assert post(guarded, "yes", EXACT).json() == {"score": 1.0}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        response = post(guarded, "yes", EXACT, headers=headers)
        assert response.status_code == 401 and "Bearer" in response.json()["detail"]
    ping = httpx.get(f"{guarded.url}/ping").json()
    assert ping["auth"] is True and ping["format_reward"] is False


def test_a_body_over_the_limit_is_413_unread(guarded):
    response = post(guarded, "y" * (100 << 10), EXACT)
    assert response.status_code == 413 and "max_body_bytes" in response.json()["detail"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        yield b'{"llm_output": "'
        for _ in range(100):
            yield b"y" * 1024

    response = httpx.post(f"{guarded.url}/reward", content=chunks(), headers=AUTH, timeout=30)
    assert response.status_code == 413


def test_malformed_bodies_are_422(guarded):
    for body in (b"[1, 2]", b'{"llm_output": 1, "verification_info": "{}"}', b"\xff\xfe{", b"[" * 50_000,
                 b'{"llm_output": "\\ud800", "verification_info": "{}"}'):
        response = httpx.post(f"{guarded.url}/reward", content=body, headers=AUTH)
        assert response.status_code == 422, body[:40]


def test_slow_and_idle_clients_are_cut_off_while_ping_answers(guarded):
    idle = socket.create_connection(("127.0.0.1", guarded.port))
    slow = socket.create_connection(("127.0.0.1", guarded.port))
    slow.sendall(b"POST /reward HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\nAuthorization: Bearer "
                 + TOKEN.encode() + b"\r\n\r\n{")  # then nothing more
    start = time.perf_counter()
    assert ping_s(guarded) < 1.0
    for sock in (idle, slow):
        sock.settimeout(READ_TIMEOUT_S * 5)
        received = b""
        while chunk := sock.recv(4096):  # until the server closes it
            received += chunk
        sock.close()
        if sock is slow:
            assert received.startswith(b"HTTP/1.1 408")
    assert time.perf_counter() - start < READ_TIMEOUT_S * 4


def test_the_connection_cap_holds_and_frees_itself(guarded):
    hogs = [socket.create_connection(("127.0.0.1", guarded.port)) for _ in range(MAX_CONNECTIONS)]
    try:
        time.sleep(0.2)
        assert post(guarded, "yes", EXACT).status_code == 503  # over the cap: refused, not queued forever
        time.sleep(READ_TIMEOUT_S * 2)  # the read deadline closes the idle ones
        assert post(guarded, "yes", EXACT).json() == {"score": 1.0}
    finally:
        for sock in hogs:
            sock.close()


def test_a_verifier_past_its_deadline_is_killed_and_scores_0_with_the_reason(guarded):
    # difflib's similarity is quadratic: two different 600-line edits take about 9 s here.
    rng = random.Random(0)
    edited = ["\n".join(f"line {i} {rng.choice('abcdefgh')}{rng.randint(0, 9)}" for i in range(600)) for _ in "ab"]
    original = "\n".join(f"line {i}" for i in range(600))
    swe = {"type": "swe_verifiable", "answer": {"input": original, "ground_truth": edited[0]}}
    output = f"```python\n{edited[1]}\n```"
    start = time.perf_counter()
    with httpx.Client(base_url=guarded.url, timeout=30) as client:
        pending = client.build_request("POST", "/reward", headers=AUTH,
                                       json={"llm_output": output, "verification_info": json.dumps(swe)})
        result: list[httpx.Response] = []
        thread = threading.Thread(target=lambda: result.append(client.send(pending)))
        thread.start()
        time.sleep(0.3)
        assert ping_s(guarded) < 1.0  # the verifier runs in a worker process, not on the event loop
        thread.join()
    response = result[0]
    assert response.json() == {"score": 0.0}
    assert "took longer than 1 s" in response.headers["x-reward-failure"]
    assert time.perf_counter() - start < 5
    assert post(guarded, "yes", EXACT).json() == {"score": 1.0}  # the killed worker was replaced


def test_an_output_over_the_length_cap_scores_0_unread(guarded):
    response = post(guarded, "yes" + " " * 30_000, EXACT)
    assert response.json() == {"score": 0.0}
    assert "over this server's max_output_chars (20000)" in response.headers["x-reward-failure"]
