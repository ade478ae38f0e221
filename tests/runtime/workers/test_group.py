"""WorkerGroup on a real local Ray cluster: gloo rendezvous of two ranks, rank-ordered results, failures named."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator

import pytest
import ray
import torch
from ray import cloudpickle

from rlc.topology import Placement
from rlc_runtime.workers.group import RankWorker, WorkerError, WorkerGroup, connect_ray

# The worker class below lives in a test module that Ray's worker processes cannot import by name.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


class TwoArgError(RuntimeError):
    """Like many libraries' errors: its __init__ takes more than the message, so it cannot be unpickled."""

    def __init__(self, message: str, extra: object) -> None:
        super().__init__(message)
        self.extra = extra


class Echo(RankWorker):
    def all_reduce(self, value: float) -> float:
        import torch.distributed as dist

        tensor = torch.tensor([value * (self.rank + 1)])
        dist.all_reduce(tensor)
        return tensor.item()

    def tag(self, part: str, suffix: str) -> str:
        return f"{self.rank}:{part}{suffix}"

    def boom(self) -> None:
        if self.rank == 1:
            raise ValueError("bad input\nsecond line")

    def unpicklable(self) -> None:  # on both ranks: the first to fail is reported
        raise TwoArgError("the server said no", extra=1)

    def die(self) -> None:
        os._exit(1)


@pytest.fixture(scope="module")
def cluster() -> Iterator[None]:
    connect_ray(num_cpus=2)
    yield
    ray.shutdown()


def test_rendezvous_and_rank_order(cluster: None) -> None:
    group = WorkerGroup("echo", Echo, Placement.one_node(2, "cpu"), "cpu")
    assert group.call("all_reduce", 1.0) == [3.0, 3.0]  # 1 * 1 + 1 * 2 on both ranks
    assert group.scatter("tag", ["a", "b"], "!") == ["0:a!", "1:b!"]
    with pytest.raises(ValueError, match="3 parts for 2 ranks"):
        group.scatter("tag", ["a", "b", "c"], "")
    with pytest.raises(WorkerError, match=r"^echo worker rank 1 failed in boom: ValueError: bad input$") as info:
        group.call("boom")
    assert 'in boom\n    raise ValueError("bad input' in info.value.details  # the remote traceback, for the log
    unpicklable = r"^echo worker rank [01] failed in unpicklable: TwoArgError: the server said no$"
    with pytest.raises(WorkerError, match=unpicklable):
        group.call("unpicklable")
    group.shutdown()


def test_dead_worker_is_named(cluster: None) -> None:
    group = WorkerGroup("solo", Echo, Placement.one_node(1, "cpu"), "cpu", distributed=False)
    with pytest.raises(WorkerError, match="solo worker rank 0 died during die"):
        group.call("die")
