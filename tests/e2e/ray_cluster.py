"""A real two-node Ray cluster on 127.0.0.1, in a child process, for the `--executor ray` tests.

`ray.cluster_utils.Cluster` starts a head (GCS, dashboard with its job API) and a second raylet, each a node of its
own with its own node id: the multi-node topology of a real cluster, on loopback. It runs in a child process so
that Ray's settings, read from the environment at import, never leak into the pytest process.

Run as a script it prints one JSON line ({"dashboard": URL, "gcs": ADDRESS}) once both nodes are up, then holds
the cluster until its standard input closes.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

CPUS_PER_NODE = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def two_node_cluster() -> Iterator[dict[str, str]]:
    """Yields the cluster's addresses; stops every Ray process on exit."""
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    process = subprocess.Popen([sys.executable, __file__], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               env=env, text=True)
    try:
        line = process.stdout.readline()
        if not line:
            raise RuntimeError(f"the Ray test cluster did not start (exit code {process.wait()})")
        yield json.loads(line)
    finally:
        process.stdin.close()
        process.wait(timeout=120)


def _serve() -> None:
    from ray.cluster_utils import Cluster

    dashboard_port = _free_port()
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": CPUS_PER_NODE, "include_dashboard": True, "dashboard_host": "127.0.0.1",
        "dashboard_port": dashboard_port, "metrics_export_port": _free_port(),
        "dashboard_agent_listen_port": _free_port(), "object_store_memory": 256 * 2**20})
    cluster.add_node(num_cpus=CPUS_PER_NODE, object_store_memory=256 * 2**20)
    cluster.wait_for_nodes()
    _wait_for_job_api(f"http://127.0.0.1:{dashboard_port}")
    print(json.dumps({"dashboard": f"http://127.0.0.1:{dashboard_port}", "gcs": cluster.address}), flush=True)
    sys.stdin.read()
    cluster.shutdown()


def _wait_for_job_api(url: str, timeout_s: float = 120) -> None:
    import time
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(f"{url}/api/version", timeout=5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


if __name__ == "__main__":
    _serve()
