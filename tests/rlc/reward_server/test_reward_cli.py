"""`rlc reward-server` as a user starts it: its options reach the server (format reward, token, limits)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

import rlc
from rlc.reward_server.process import free_port
from rlc.reward_server.verifiers.format_check import EOS_TOKEN

ROOT = str(Path(rlc.__file__).resolve().parents[1])


def test_format_reward_and_token_options_reach_the_server(tmp_path):
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p),
           "RLC_REWARD_TOKEN": "from-the-env"}
    command = [sys.executable, "-c", "from rlc.cli import main; main()", "reward-server", "--port", str(port),
               "--format-reward", "--verifier-workers", "1", "--max-body-bytes", "4096"]
    with open(tmp_path / "server.log", "wb") as log:
        server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                ping = httpx.get(f"{url}/ping", timeout=1).json()
                break
            except httpx.TransportError:
                assert server.poll() is None and time.monotonic() < deadline, (tmp_path / "server.log").read_text()
                time.sleep(0.1)
        assert ping["format_reward"] is True and ping["auth"] is True
        info = json.dumps({"type": "math_verifiable", "answer": {"value": "3"}})
        auth = {"Authorization": "Bearer from-the-env"}

        def score(output: str) -> float:
            response = httpx.post(f"{url}/reward", json={"llm_output": output, "verification_info": info},
                                  headers=auth)
            return response.json()["score"]

        # rl_verifier's weighting, worked by hand: 0.9 x answer + 0.1 x format.
        assert score(f"<think>1 + 2</think> so \\boxed{{3}}{EOS_TOKEN}") == 1.0
        assert score("so \\boxed{3}") == 0.9
        assert score(f"<think>1 + 2</think> so \\boxed{{4}}{EOS_TOKEN}") == 0.1
        too_big = httpx.post(f"{url}/reward", json={"llm_output": "x" * 5000, "verification_info": info},
                             headers=auth)
        assert too_big.status_code == 413
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
