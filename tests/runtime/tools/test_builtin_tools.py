"""The bundled tools, each against the real thing: the reward server's sandbox, an HTTP server on loopback."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from rlc_runtime.tools.calculator import AddTool
from rlc_runtime.tools.code import CodeTool
from rlc_runtime.tools.http import HttpTool

SCHEMA = {"type": "function", "function": {"name": "t"}}


def run(tool: Any, arguments: dict[str, Any]) -> str:
    return asyncio.run(tool.execute("one", arguments))


def test_code_runs_in_the_sandbox() -> None:
    tool = CodeTool({"timeout_s": 2}, SCHEMA)
    assert run(tool, {"code": "print(6 * 7)"}) == "42\n"
    failed = run(tool, {"code": "print('before')\nraise ValueError('no')"})
    assert failed.startswith("before\nError (exit 1):") and "ValueError: no" in failed
    assert run(tool, {"code": "import time\nprint('x', flush=True)\ntime.sleep(30)"}).startswith(
        "Error: the program ran past 2 s")
    assert run(tool, {}) == "Error: the argument `code` (a string of Python) is missing"


@pytest.fixture
def echo_server() -> Iterator[str]:
    class Echo(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the http.server hook's name
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            status = 500 if body.get("fail") else 200
            reply = json.dumps({"got": body, "auth": self.headers.get("Authorization")}).encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/tool"
    server.shutdown()


def test_http_posts_the_arguments(echo_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOOL_TOKEN", "Bearer s3cret")
    tool = HttpTool({"url": echo_server, "headers": {"Authorization": "${TOOL_TOKEN}"}}, SCHEMA)
    assert json.loads(run(tool, {"q": "weather"})) == {"got": {"q": "weather"}, "auth": "Bearer s3cret"}
    assert run(tool, {"fail": True}) == "Error: HTTP 500 Internal Server Error"
    assert run(HttpTool({"url": "file:///etc/passwd"}, SCHEMA), {}).startswith("Error: the tool's url")


def test_add() -> None:
    assert run(AddTool({}, SCHEMA), {"a": 23, "b": 45}) == "23 + 45 = 68\n"
    assert run(AddTool({}, SCHEMA), {"a": "23", "b": 45}) == "Error: a and b must be integers"
