"""Start the reward server as a child process and wait until it answers /ping: for tests, benchmarks and
end-to-end runs that need a real server on 127.0.0.1.

A child process, not a thread: it can be killed like a crashed server (the restart tests need that), and its
event loop runs in its main thread, where math-verify's timeouts work. It gets its own process group so that a
kill also ends its uvicorn workers and their sandboxes.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

import rlc

_LAUNCH = "import json, sys; from rlc.reward_server import serve; serve(**json.loads(sys.argv[1]))"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """`with ServerProcess(workers=2, request_log=...) as server: ... server.url ...`; options go to `serve`."""

    def __init__(self, port: int | None = None, log_path: Path | None = None, **options: Any) -> None:
        self.port = port or free_port()
        self.options = {"host": "127.0.0.1", "port": self.port, "log_level": "warning", **options}
        self.log_path = log_path or Path(tempfile.mkstemp(prefix="rlc-reward-server-", suffix=".log")[1])
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 60.0) -> ServerProcess:
        env = dict(os.environ)
        root = str(Path(rlc.__file__).resolve().parents[1])  # the child imports this rlc, installed or not
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-c", _LAUNCH, json.dumps(self.options)], env=env,
                                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self._wait_ready(timeout_s)
        return self

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the reward server exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/ping", timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"the reward server did not answer /ping within {timeout_s:.0f} s:\n{self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL to the whole process group: a crash, as far as clients can tell."""
        self._signal(signal.SIGKILL)

    def stop(self) -> None:
        self._signal(signal.SIGTERM)

    def _signal(self, sig: int) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
