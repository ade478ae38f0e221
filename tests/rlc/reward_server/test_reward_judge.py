"""`llm_judge` forwarded to an OpenAI-compatible endpoint.

The endpoint is a test double: a tiny OpenAI-compatible HTTP server on 127.0.0.1 that judges by substring. A real
judge model (vLLM or SGLang serving a chat model) cannot exist here (no GPU, no model weights); everything else is
real: the reward server is a uvicorn child process and the requests travel over HTTP both ways.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from rlc.reward_server.process import ServerProcess
from rlc.reward_server.verifiers.judge import PROMPT
from rlc_runtime.rewards.remote import RemoteRewardClient


class FakeJudge(ThreadingHTTPServer):
    """Says "True" when the reference answer occurs in the model response; fails `failures` calls first."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests: list[dict[str, Any]] = []
        self.auth: list[str | None] = []
        self.failures = 0
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class _Handler(BaseHTTPRequestHandler):
    server: FakeJudge

    def do_GET(self) -> None:
        if self.path == "/v1/models":
            self._reply(200, {"object": "list", "data": [{"id": "judge-7b", "object": "model"}]})
        else:
            self._reply(404, {"error": "not found"})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with self.server.lock:
            self.server.requests.append(body)
            self.server.auth.append(self.headers.get("Authorization"))
            failing = self.server.failures > 0
            self.server.failures -= failing
        if failing:
            self._reply(500, {"error": "overloaded"})
            return
        prompt = body["messages"][0]["content"]
        response = re.search(r"<Model Response>\n(.*)\n</Model Response>", prompt, re.DOTALL).group(1)
        reference = re.search(r"<Reference Answer>\n(.*)\n</Reference Answer>", prompt, re.DOTALL).group(1)
        verdict = '"True"' if reference.lower() in response.lower() else "False"
        self._reply(200, {"choices": [{"index": 0, "message": {"role": "assistant", "content": verdict}}]})

    def _reply(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def judge() -> Iterator[FakeJudge]:
    server = FakeJudge()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()


@pytest.fixture(scope="module")
def judged_server(judge: FakeJudge, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    log = tmp_path_factory.mktemp("judged") / "server.log"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OPENAI_API_KEY", "sk-judge-secret")
        server = ServerProcess(judge_url=judge.url, log_path=log, log_level="info").start()
    yield server
    server.stop()
    assert "sk-judge-secret" not in log.read_text()  # the key is sent to the judge, never logged


def _info(reference: str) -> str:
    return json.dumps({"type": "llm_judge", "answer": {"value": reference}})


def test_the_judge_decides_and_sees_rl_verifiers_prompt(judge, judged_server):
    assert httpx.get(f"{judged_server.url}/ping").json()["judge"] is True
    with RemoteRewardClient(judged_server.url, max_workers=4, timeout=10) as client:
        batch = client.score(["Give antibiotics, twice daily.", "Rest and fluids."],
                             [_info("antibiotics"), _info("antibiotics")])
    assert batch.scores == [1.0, 0.0]
    last = judge.requests[-1]
    assert last["model"] == "judge-7b"  # discovered from /models: none was configured
    assert last["temperature"] == 0.0 and "max_tokens" not in last
    prompts = [request["messages"][0]["content"] for request in judge.requests[-2:]]  # in either order
    assert PROMPT.format(model_response="Rest and fluids.", ground_truth="antibiotics") in prompts
    assert judge.auth[-1] == "Bearer sk-judge-secret"


def test_a_failing_judge_is_a_502_that_the_client_retries(judge, judged_server):
    judge.failures = 1
    response = httpx.post(f"{judged_server.url}/reward",
                          json={"llm_output": "antibiotics", "verification_info": _info("antibiotics")})
    assert response.status_code == 502 and "the judge at" in response.json()["detail"]
    judge.failures = 2
    with RemoteRewardClient(judged_server.url, max_workers=1, timeout=10, max_retries=3,
                            backoff_base=0.01) as client:
        batch = client.score(["antibiotics"], [_info("antibiotics")])
    assert batch.scores == [1.0] and batch.retries == 2 and batch.failures == 0
