"""One bundled reward server per test session, a real uvicorn child process on 127.0.0.1, with short sandbox
limits so that the limit tests stay fast."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from rlc.reward_server.process import ServerProcess

TIME_LIMIT_S = 1.0


@pytest.fixture(scope="session")
def reward_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp: Path = tmp_path_factory.mktemp("reward_server")
    server = ServerProcess(code_time_limit_s=TIME_LIMIT_S, code_memory_mb=256, max_sandboxes=4,
                           request_log=str(tmp / "requests.jsonl"), log_path=tmp / "server.log")
    with server:
        yield server


Post = Callable[[str, Any], httpx.Response]


@pytest.fixture
def post(reward_server: ServerProcess) -> Iterator[Post]:
    with httpx.Client(base_url=reward_server.url, timeout=30) as client:

        def send(llm_output: str, verification_info: Any) -> httpx.Response:
            info = verification_info if isinstance(verification_info, str) else json.dumps(verification_info)
            return client.post("/reward", json={"llm_output": llm_output, "verification_info": info})

        yield send
