"""A Ray cluster started by rlc's own rendered scripts, and jobs driven through `rlc launch|status|logs|stop`.

`rlc launch --executor ray --dry-run` renders ray_head.sh and ray_worker.sh; the head runs on 127.0.0.2 and a
worker on 127.0.0.3 (two loopback addresses: two Ray nodes with addresses of their own, on one machine), with
Ray's token authentication on (a token file of the test's own, named by `ray_cluster.auth_token_path`). Jobs go
to the head's job API at 127.0.0.2 as from a login node. One cluster serves every test of the module (starting
one takes most of a minute on 2 cores).

The secret sent with the job (`ray_cluster.pass_env`) is checked by a reward function of the test's that writes
the SHA-256 of the variable it sees, never the value; the value must appear in no file of the run directory or of
Ray's session directory.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from e2e_runs import SMALL, merge, read_metrics

pytestmark = pytest.mark.slow
HEAD, WORKER = "127.0.0.2", "127.0.0.3"
SECRET_NAME = "RLC_TEST_UPLOAD_TOKEN"
REWARD = '''
import hashlib, os
from pathlib import Path

def compute_score(data_source, solution_str, ground_truth, extra_info=None):
    seen = os.environ.get("{name}")
    digest = hashlib.sha256(seen.encode()).hexdigest() if seen else "unset"
    Path("{out}").write_text(digest)
    return float(solution_str.strip() == str(ground_truth).strip())
'''


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _rlc(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rlc.cli", *args], capture_output=True, text=True, env=env,
                          timeout=timeout)


class Cluster:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.temp_dir = Path(tempfile.mkdtemp(prefix="rlcray", dir="/tmp"))  # Ray's socket paths must stay short
        self.token_file = root / "ray_token"
        self.token_file.write_text(secrets.token_hex(32))
        self.token_file.chmod(0o600)
        self.port, self.dashboard_port = _free_port(HEAD), _free_port(HEAD)
        self.job_api = f"http://{HEAD}:{self.dashboard_port}"
        self.processes: list[subprocess.Popen[bytes]] = []
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}

    def config(self, name: str, steps: int, extra: dict | None = None) -> Path:
        reward = self.root / f"{name}_reward.py"
        reward.write_text(REWARD.format(name=SECRET_NAME, out=self.root / f"{name}.seen"))
        tree = merge(SMALL, {
            "trainer": {"nnodes": 2, "n_gpus_per_node": 1, "total_training_steps": steps,
                        "experiment_name": name},
            "actor_rollout_ref": {"actor": {"ppo_micro_batch_size_per_gpu": 4}},
            "custom_reward_function": {"path": str(reward)},
            "ray_cluster": {"port": self.port, "dashboard_port": self.dashboard_port, "address": self.job_api,
                            "auth_token_path": str(self.token_file), "pass_env": [SECRET_NAME],
                            "worker_timeout_s": 120}})
        path = self.root / f"{name}.yaml"
        path.write_text(yaml.safe_dump(merge(tree, extra or {})))
        return path

    def start(self) -> None:
        scripts = self.root / "cluster"
        rendered = _rlc("launch", str(self.config("cluster", 1)), "--executor", "ray", "--run-dir", str(scripts),
                        "--dry-run", env=self.env)
        assert rendered.returncode == 0, rendered.stderr
        common = ["--num-cpus=2", "--object-store-memory=200000000", f"--temp-dir={self.temp_dir}"]
        self._run(scripts / "ray_head.sh", HEAD, *common, f"--metrics-export-port={_free_port(HEAD)}",
                  f"--dashboard-agent-listen-port={_free_port(HEAD)}", f"--ray-client-server-port={_free_port(HEAD)}")
        # The worker script waits for the head by itself (ray_cluster.worker_timeout_s): start it at once.
        self._run(scripts / "ray_worker.sh", f"{HEAD}:{self.port}", f"--node-ip-address={WORKER}", *common,
                  f"--metrics-export-port={_free_port(WORKER)}", f"--dashboard-agent-listen-port={_free_port(WORKER)}")
        deadline = time.monotonic() + 180
        while not self._answers():  # the job waits for both nodes itself (ray_job.sh)
            assert time.monotonic() < deadline and all(p.poll() is None for p in self.processes), self._output()
            time.sleep(1)

    def _run(self, script: Path, *args: str) -> None:
        log = (self.root / f"{script.stem}.log").open("wb")
        self.processes.append(subprocess.Popen(["bash", str(script), *args], stdout=log, stderr=subprocess.STDOUT,
                                               env=self.env, start_new_session=True))

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(self._authorized(f"{self.job_api}/api/version"), timeout=5):
                return True
        except OSError:
            return False

    def _authorized(self, url: str) -> urllib.request.Request:
        return urllib.request.Request(url, headers={"Authorization": f"Bearer {self.token_file.read_text()}"})

    def _output(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in self.root.glob("ray_*.log"))

    def stop(self) -> None:
        for process in self.processes:  # a test cluster: no need for `ray start --block`'s slow clean exit
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        self._kill_leftovers()
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def _kill_leftovers(self) -> None:
        """Ray processes that left the scripts' process groups (job drivers, workers) still name the session."""
        for proc in Path("/proc").glob("[0-9]*"):
            with contextlib.suppress(OSError):
                if str(self.temp_dir).encode() in (proc / "cmdline").read_bytes():
                    os.kill(int(proc.name), signal.SIGKILL)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("raycluster"))
    try:
        c.start()
        yield c
    finally:
        c.stop()


def _launch(cluster: Cluster, config: Path, run_dir: Path, secret: str) -> subprocess.Popen[str]:
    env = cluster.env | {SECRET_NAME: secret}
    return subprocess.Popen([sys.executable, "-m", "rlc.cli", "launch", str(config), "--executor", "ray",
                             "--run-dir", str(run_dir)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env)


def _files_holding(root: Path, needle: bytes) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.is_file() and not p.is_socket() and needle in p.read_bytes()]


def test_the_job_api_listens_on_the_head_address_and_wants_the_token(cluster: Cluster) -> None:
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{cluster.job_api}/api/jobs/", timeout=10)
    assert refused.value.code == 401  # Ray's token authentication is on
    with urllib.request.urlopen(cluster._authorized(f"{cluster.job_api}/api/jobs/"), timeout=10) as answer:
        assert answer.status == 200
    with pytest.raises(OSError):  # dashboard_host defaults to the node's address, not every interface
        urllib.request.urlopen(f"http://127.0.0.1:{cluster.dashboard_port}/api/version", timeout=5)


def test_a_job_spans_both_nodes_gets_the_secret_and_writes_it_nowhere(cluster: Cluster) -> None:
    secret = "hf_" + secrets.token_hex(16)
    run_dir = cluster.root / "finishing"
    proc = _launch(cluster, cluster.config("finishing", steps=2), run_dir, secret)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    assert f"rlc status {run_dir}" in out and f"rlc stop {run_dir}" in out
    placed = re.search(r"2 train rank\(s\) on (\d+) Ray node\(s\): rank 0 on (\w+), rank 1 on (\w+)", out)
    assert placed and placed.group(1) == "2" and placed.group(2) != placed.group(3), out
    assert [row["step"] for row in read_metrics(run_dir)] == [1, 2]
    assert (cluster.root / "finishing.seen").read_text() == hashlib.sha256(secret.encode()).hexdigest()
    job = json.loads((run_dir / "job.json").read_text())
    assert job["address"] == cluster.job_api and job["submission_id"]
    status = _rlc("status", str(run_dir), env=cluster.env)
    assert status.returncode == 0 and "SUCCEEDED" in status.stdout, status.stdout + status.stderr
    assert secret not in out
    assert _files_holding(run_dir, secret.encode()) == []
    assert _files_holding(cluster.temp_dir, secret.encode()) == []
    assert list(Path(tempfile.gettempdir()).glob("rlc-runtime-env-*")) == []  # the submit-time file is gone


def test_status_logs_and_stop_reach_a_running_job(cluster: Cluster) -> None:
    run_dir = cluster.root / "stopped"
    proc = _launch(cluster, cluster.config("stopped", steps=500), run_dir, "irrelevant")
    deadline = time.monotonic() + 300
    while not ((run_dir / "metrics.jsonl").exists() and read_metrics(run_dir)):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0]
        time.sleep(0.5)
    status = _rlc("status", str(run_dir), env=cluster.env)
    assert status.returncode == 0 and "RUNNING" in status.stdout, status.stdout + status.stderr
    logs = _rlc("logs", str(run_dir), env=cluster.env)
    assert logs.returncode == 0 and "2 train rank(s) on 2 Ray node(s)" in logs.stdout, logs.stdout + logs.stderr
    stopped = _rlc("stop", str(run_dir), env=cluster.env)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 1 and "STOPPED" in out, out  # the launcher following the logs saw the stop
    status = _rlc("status", str(run_dir), env=cluster.env)
    assert status.returncode == 1 and "STOPPED" in status.stdout
    steps = len(read_metrics(run_dir))
    time.sleep(3)
    assert len(read_metrics(run_dir)) == steps  # nothing trains on after the stop


def test_ctrl_c_on_the_launcher_stops_the_job(cluster: Cluster) -> None:
    run_dir = cluster.root / "interrupted"
    proc = _launch(cluster, cluster.config("interrupted", steps=500), run_dir, "irrelevant")
    deadline = time.monotonic() + 300
    while not (run_dir / "job.json").exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0]
        time.sleep(0.5)
    time.sleep(2)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "stopping Ray job" in out, out
    deadline = time.monotonic() + 60
    while "STOPPED" not in (status := _rlc("status", str(run_dir), env=cluster.env)).stdout:
        assert time.monotonic() < deadline, status.stdout + status.stderr
        time.sleep(1)
