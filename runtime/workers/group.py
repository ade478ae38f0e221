"""N ranks as Ray actors, joined into one torch.distributed group, driven by one controller.

The controller never sees a rank's engine; it calls a method on every rank (`call`) or hands each rank its slice
(`scatter`) and gets the results back in rank order. Rendezvous goes through rank 0: it reports its node's IP
(127.0.0.1 when Ray is bound to loopback) and a free port, then all ranks call `init_process_group` together.

A failure on any rank ends the wait at once (the other ranks may be stuck in a collective that will never
complete) and becomes one `WorkerError` naming the group, the rank and the method; the remote traceback rides
along in `details` for the run's error log.

Placement is the compiler's (`rlc.topology.Placement`, read from plan.json): one placement group per worker group,
one bundle per node, ranks filling nodes in order; a rank takes a GPU, or on CPU runs one CPU rank of its node's
bundle. A CPU group on one node skips the placement group: its ranks are processes on this node and ask Ray for
no CPU, so that a 2-core machine can hold 2 ranks and the reward worker without waiting. Two groups can share one
GPU (`beside`, each rank a fraction of it): the rollout process beside the trainer's.
"""

from __future__ import annotations

import datetime
import logging
import os
import re
import socket
import time
from typing import Any

import ray
from ray._private import ray_constants
from ray.exceptions import GetTimeoutError, RayActorError, RayError, RayTaskError
from ray.util.placement_group import placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from rlc.topology import Placement

OBJECT_STORE_BYTES = 512 * 2**20  # batches of token ids (weights travel by collectives); Ray's default: 30% of RAM


def connect_ray(num_cpus: int | None = None, runtime_env: dict[str, Any] | None = None) -> None:
    """Join the cluster in RAY_ADDRESS (what the launch scripts start), else start a light one on loopback:
    no dashboard, a small object store."""
    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    address = os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, runtime_env=runtime_env, log_to_driver=True, logging_level=logging.WARNING)
    else:
        # Keep a local cluster on 127.0.0.1: Ray otherwise swaps a loopback node address for a routable one. Its
        # single-node switch is an environment variable read at import, so set it for the worker processes and
        # for this already-imported process alike.
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
        ray_constants.ENABLE_RAY_CLUSTER = False
        ray.init(address="local", num_cpus=num_cpus or os.cpu_count(), include_dashboard=False,
                 _node_ip_address="127.0.0.1", object_store_memory=OBJECT_STORE_BYTES,
                 runtime_env=_inherited(runtime_env), log_to_driver=True, logging_level=logging.WARNING)


def _inherited(runtime_env: dict[str, Any] | None) -> dict[str, Any] | None:
    """runtime_env's variables set in this process instead: the workers of a cluster it starts inherit them, and
    Ray's runtime_env agent would write them into its log in clear, secrets (HF_TOKEN) included. (On a cluster
    started elsewhere they can only travel in runtime_env.)"""
    if not runtime_env or not runtime_env.get("env_vars"):
        return runtime_env
    os.environ.update({name: str(value) for name, value in runtime_env["env_vars"].items()})
    return {key: value for key, value in runtime_env.items() if key != "env_vars"} or None


class WorkerError(RuntimeError):
    def __init__(self, message: str, details: str = "") -> None:
        super().__init__(message)
        self.details = details


class RankWorker:
    """Base of every rank: distributed setup in one place. Subclasses add the roles (engines) they hold."""

    def __init__(self, rank: int, world_size: int, device: str) -> None:
        self.rank, self.world_size, self.device = rank, world_size, device
        import torch

        if device == "cpu":  # ranks share the cores; oversubscribed threads slow everyone down
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // world_size))
        else:
            torch.cuda.set_device(0)  # Ray sets CUDA_VISIBLE_DEVICES to this rank's GPU

    def master_address(self) -> tuple[str, int]:
        host = self.node_ip()
        with socket.socket() as sock:
            sock.bind((host, 0))
            return host, sock.getsockname()[1]

    def init_distributed(self, host: str, port: int, timeout_s: int) -> None:
        import torch.distributed as dist

        os.environ.update(MASTER_ADDR=host, MASTER_PORT=str(port), RANK=str(self.rank),
                          WORLD_SIZE=str(self.world_size), LOCAL_RANK="0")
        backend = "gloo" if self.device == "cpu" else "cpu:gloo,cuda:nccl"
        dist.init_process_group(backend, init_method=f"tcp://{host}:{port}", rank=self.rank,
                                world_size=self.world_size, timeout=datetime.timedelta(seconds=timeout_s))

    def ready(self) -> bool:
        return True

    def device_name(self) -> str:
        import torch

        return torch.cuda.get_device_name() if self.device == "cuda" else self.device

    def memory_peaks(self) -> dict[str, float]:
        """GiB at peak since the last call, then a fresh peak: torch's allocated and reserved memory, and the
        device's use (total - free, sampled every 10 ms). Only the last sees all of the GPU: vLLM's sleep mode
        unmaps its pool while torch's books still count it, and the CUDA context lies outside them. Empty off
        the GPU."""
        import torch

        if self.device != "cuda":
            return {}
        if not hasattr(self, "_device_sampler"):
            self._device_sampler = DeviceSampler()
        peaks = {"allocated": torch.cuda.max_memory_allocated() / 2**30,
                 "reserved": torch.cuda.max_memory_reserved() / 2**30, "device": self._device_sampler.take() / 2**30}
        torch.cuda.reset_peak_memory_stats()
        return peaks

    def node_id(self) -> str:
        return ray.get_runtime_context().get_node_id()

    def node_ip(self) -> str:
        """The address this node joined Ray with (ray.util.get_node_ip_address guesses a routable one instead)."""
        node_id = self.node_id()
        return next(n["NodeManagerAddress"] for n in ray.nodes() if n["NodeID"] == node_id)


class DeviceSampler:
    """The device's peak use (total - free) between calls of `take`, sampled by a daemon thread: what lies outside
    torch's allocator (vLLM's pool, the CUDA context, NCCL) counts too."""

    def __init__(self, interval_s: float = 0.01) -> None:
        import threading

        self.peak = self._used()
        self.lock = threading.Lock()
        threading.Thread(target=self._run, args=(interval_s,), daemon=True, name="rlc-memory").start()

    @staticmethod
    def _used() -> int:
        import torch

        free, total = torch.cuda.mem_get_info()
        return total - free

    def _run(self, interval_s: float) -> None:
        while True:
            used = self._used()
            with self.lock:
                self.peak = max(self.peak, used)
            time.sleep(interval_s)

    def take(self) -> int:
        """The peak since the last call; the next peak starts from the use now."""
        now = self._used()
        with self.lock:
            peak, self.peak = max(self.peak, now), now
        return peak


class WorkerGroup:
    def __init__(self, name: str, cls: type, placement: Placement, device: str, *, args: tuple[Any, ...] = (),
                 distributed: bool = True, timeout_s: int = 600, gpu_share: float = 1.0,
                 beside: WorkerGroup | None = None) -> None:
        """`gpu_share` < 1 with `beside`: this group's ranks join the bundles of `beside` (whose ranks took the
        same share), rank r on the GPU of its rank r: two processes on one GPU."""
        self.name, self.world_size = name, placement.world_size
        self.gpu_share, self.placement_group = gpu_share, beside.placement_group if beside else None
        remote_cls = ray.remote(cls)
        options = self._options(placement, timeout_s)
        self.workers = [remote_cls.options(**options(rank)).remote(rank, self.world_size, device, *args)
                        for rank in range(self.world_size)]
        if distributed:
            host, port = self._wait([self.workers[0].master_address.remote()], "master_address")[0]
            self._wait([w.init_distributed.remote(host, port, timeout_s) for w in self.workers], "init_distributed")
        else:
            self._wait([w.ready.remote() for w in self.workers], "__init__")

    def _options(self, placement: Placement, timeout_s: int) -> Any:
        """Ray options per rank: a bundle of the group's placement group (none for CPU ranks on one node)."""
        if placement.resource == "CPU" and placement.nodes == 1:
            return lambda rank: {"num_cpus": 0}
        if self.placement_group is None:
            self.placement_group = placement_group(placement.bundles(), strategy=placement.strategy)
        group = self.placement_group
        try:
            ray.get(group.ready(), timeout=timeout_s)
        except GetTimeoutError:
            raise WorkerError(f"{self.name} workers: the Ray cluster cannot give {placement.nodes} node(s) "
                              f"{placement.bundles()[0]} each within {timeout_s} s; it has "
                              f"{ray.cluster_resources()}") from None
        share = {"num_cpus": 0, "num_gpus": self.gpu_share} if placement.resource == "GPU" else {"num_cpus": 1}
        return lambda rank: share | {"scheduling_strategy": PlacementGroupSchedulingStrategy(
            group, placement_group_bundle_index=placement.node_of(rank))}

    def call(self, method: str, *args: Any, **kwargs: Any) -> list[Any]:
        """The same call on every rank; results in rank order."""
        return self._wait(self.submit(method, *args, **kwargs), method)

    def submit(self, method: str, *args: Any, **kwargs: Any) -> list[ray.ObjectRef]:
        return [getattr(w, method).remote(*args, **kwargs) for w in self.workers]

    def scatter(self, method: str, parts: list[Any], *args: Any, **kwargs: Any) -> list[Any]:
        """Rank r gets `parts[r]` as its first argument; results in rank order."""
        return self._wait(self.submit_parts(method, parts, *args, **kwargs), method)

    def submit_parts(self, method: str, parts: list[Any], *args: Any, **kwargs: Any) -> list[ray.ObjectRef]:
        if len(parts) != self.world_size:
            raise ValueError(f"{len(parts)} parts for {self.world_size} ranks")
        return [getattr(w, method).remote(part, *args, **kwargs) for w, part in zip(self.workers, parts, strict=True)]

    def wait(self, refs: list[ray.ObjectRef], method: str) -> list[Any]:
        return self._wait(refs, method)

    def _wait(self, refs: list[ray.ObjectRef], method: str) -> list[Any]:
        return wait_groups([(self, refs)], method)[0]

    def shutdown(self) -> None:
        for worker in self.workers:
            ray.kill(worker)


def wait_groups(calls: list[tuple[WorkerGroup, list[ray.ObjectRef]]], method: str) -> list[list[Any]]:
    """The results of calls on several groups at once (a collective spanning them, as a weight transfer), per
    group in rank order. The first failure on any rank of any group ends the wait: the others may be stuck in the
    collective."""
    where = {ref: (group.name, rank) for group, refs in calls for rank, ref in enumerate(refs)}
    pending = list(where)
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        name, rank = where[done[0]]
        try:
            ray.get(done[0])
        except RayTaskError as error:
            cause = getattr(error, "cause", None) or error
            raise WorkerError(f"{name} worker rank {rank} failed in {method}: "
                              f"{type(cause).__name__}: {_first_line(cause)}", _plain(str(error))) from None
        except RayActorError as error:
            raise WorkerError(f"{name} worker rank {rank} died during {method} (killed, or out "
                              f"of memory?): {_first_line(error)}", str(error)) from None
        except RayError as error:  # e.g. an exception that cannot be unpickled here: its text still names it
            details = _plain(str(error))
            raise WorkerError(f"{name} worker rank {rank} failed in {method}: "
                              f"{_last_error_line(details)}", details) from None
    return [ray.get(refs) for _, refs in calls]


def _plain(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def _last_error_line(text: str) -> str:
    """`pkg.module.SomeError: message` from the end of a traceback, shortened to `SomeError: message`."""
    lines = [line for line in text.strip().splitlines() if line and not line.startswith(" ")]
    last = lines[-1] if lines else "(no message)"
    name, _, message = last.partition(": ")
    return f"{name.rsplit('.', 1)[-1]}: {message}" if message else last


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else "(no message)"
