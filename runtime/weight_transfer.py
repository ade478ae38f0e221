"""Weights from training rank 0 to rollout ranks of their own (`hybrid_engine: false`), in fixed-size flat buffers.

Both ends agree on the layout before the first transfer: the trainer announces each weight's name, shape and dtype
once (`WeightSpec`), and `plan_buckets` cuts that list into buckets of at most `bucket_bytes` (a larger tensor gets
a bucket of its own), every tensor at an aligned offset of one flat byte buffer. A transfer then moves raw bytes
only: training rank 0 packs a bucket into its buffer and broadcasts it; each rollout rank receives into a buffer of
the same size and hands views of it (exact copies of the trainer's bits) to its engine, one bucket at a time, so
over a process group neither end holds a second copy of the whole model (one bucket's buffer each).

Two channels implement the move:
- `BroadcastChannel`: a process group of its own (training rank 0 as rank 0, rollout rank r as r + 1), apart from
  each side's default group: NCCL on GPU (buffers stay on the device: no CPU copy), gloo on CPU.
- `IpcChannel`: trainer and rollout share one GPU (two processes, one device). NCCL refuses two ranks on one
  device, so the trainer keeps one device buffer per bucket (together one copy of the weights: the rollout reads
  them after the trainer has filled them all), shares them once as CUDA IPC handles (torch's multiprocessing
  reductions), and the rollout reads them in place. GPU only; on CPU it refuses.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

ALIGN = 256  # bytes; every tensor starts at a multiple, so a byte view can be reinterpreted as any dtype


@dataclass(frozen=True)
class WeightSpec:
    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype

    @property
    def nbytes(self) -> int:
        return torch.Size(self.shape).numel() * torch.empty((), dtype=self.dtype).element_size()


@dataclass(frozen=True)
class Slot:
    spec: WeightSpec
    offset: int


Bucket = list[Slot]


def specs_of(weights: Iterable[tuple[str, torch.Tensor]]) -> list[WeightSpec]:
    return [WeightSpec(name, tuple(tensor.shape), tensor.dtype) for name, tensor in weights]


def plan_buckets(specs: list[WeightSpec], bucket_bytes: int) -> list[Bucket]:
    """Consecutive specs packed into buckets of at most `bucket_bytes` (or one spec, when it alone is larger)."""
    buckets: list[Bucket] = []
    current: Bucket = []
    end = 0
    for spec in specs:
        offset = _aligned(end)
        if current and offset + spec.nbytes > bucket_bytes:
            buckets.append(current)
            current, offset = [], 0
        current.append(Slot(spec, offset))
        end = offset + spec.nbytes
    if current:
        buckets.append(current)
    return buckets


def bucket_size(bucket: Bucket) -> int:
    last = bucket[-1]
    return _aligned(last.offset + last.spec.nbytes)


def _aligned(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def pack(bucket: Bucket, weights: Iterator[tuple[str, torch.Tensor]], buffer: torch.Tensor) -> None:
    """The bucket's next tensors from `weights`, as raw bytes, into `buffer` (uint8)."""
    for slot in bucket:
        name, tensor = next(weights)
        if name != slot.spec.name or tuple(tensor.shape) != slot.spec.shape or tensor.dtype != slot.spec.dtype:
            raise RuntimeError(f"weight transfer: the trainer sent {name} {tuple(tensor.shape)} {tensor.dtype} "
                               f"where the layout expects {slot.spec}")
        flat = tensor.detach().contiguous().reshape(-1).view(torch.uint8)
        buffer[slot.offset: slot.offset + slot.spec.nbytes].copy_(flat, non_blocking=True)


def unpack(bucket: Bucket, buffer: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    """Views of `buffer` (valid until it is reused), one per weight of the bucket."""
    return [(s.spec.name, buffer[s.offset: s.offset + s.spec.nbytes].view(s.spec.dtype).view(s.spec.shape))
            for s in bucket]


class BroadcastChannel:
    """A process group of its own between training rank 0 (rank 0 here) and the rollout ranks."""

    def __init__(self, host: str, port: int, rank: int, size: int, device: str, timeout_s: int) -> None:
        timeout = datetime.timedelta(seconds=timeout_s)
        store = dist.TCPStore(host, port, size, is_master=rank == 0, timeout=timeout)
        self.rank, self.device = rank, device
        if device == "cuda":
            self.group: Any = dist.ProcessGroupNCCL(store, rank, size)
        else:
            self.group = dist.ProcessGroupGloo(store, rank, size, timeout)
        self.buffer: torch.Tensor | None = None

    def _buffer(self, buckets: list[Bucket]) -> torch.Tensor:
        size = max(bucket_size(b) for b in buckets)
        if self.buffer is None or self.buffer.numel() != size:
            self.buffer = torch.empty(size, dtype=torch.uint8, device=self.device)
        return self.buffer

    def _broadcast(self, view: torch.Tensor) -> None:
        options = dist.BroadcastOptions()
        options.rootRank = 0
        self.group.broadcast([view], options).wait()

    def send(self, weights: Iterable[tuple[str, torch.Tensor]], buckets: list[Bucket]) -> None:
        buffer, stream = self._buffer(buckets), iter(weights)
        for bucket in buckets:
            view = buffer[: bucket_size(bucket)]
            pack(bucket, stream, view)
            self._broadcast(view)
        _exhausted(stream)

    def receive(self, buckets: list[Bucket]) -> Iterator[list[tuple[str, torch.Tensor]]]:
        buffer = self._buffer(buckets)
        for bucket in buckets:
            view = buffer[: bucket_size(bucket)]
            self._broadcast(view)
            yield unpack(bucket, view)


class IpcChannel:
    """Trainer and rollout on one GPU: the trainer's bucket buffers, opened by the rollout through CUDA IPC."""

    def __init__(self, device: str, buckets: list[Bucket]) -> None:
        if device != "cuda" or not torch.cuda.is_available():
            raise RuntimeError("the CUDA IPC weight transfer (trainer and rollout sharing one GPU) needs a GPU; "
                               "on CPU the rollout's own ranks receive weights over gloo")
        self.buckets = buckets
        self.buffers: list[torch.Tensor] = []

    def export(self) -> list[Any]:
        """Trainer side: allocate the buffers and return their IPC handles (picklable, sent once)."""
        from torch.multiprocessing.reductions import reduce_tensor

        self.buffers = [torch.empty(bucket_size(b), dtype=torch.uint8, device="cuda") for b in self.buckets]
        return [reduce_tensor(buffer) for buffer in self.buffers]

    def open(self, handles: list[Any]) -> None:
        """Rollout side: map the trainer's buffers into this process (no copy)."""
        self.buffers = [rebuild(*args) for rebuild, args in handles]

    def send(self, weights: Iterable[tuple[str, torch.Tensor]], buckets: list[Bucket]) -> None:
        stream = iter(weights)
        for bucket, buffer in zip(buckets, self.buffers, strict=True):
            pack(bucket, stream, buffer)
        _exhausted(stream)
        torch.cuda.synchronize()  # the rollout reads only after this call returns

    def receive(self, buckets: list[Bucket]) -> Iterator[list[tuple[str, torch.Tensor]]]:
        for bucket, buffer in zip(buckets, self.buffers, strict=True):
            yield unpack(bucket, buffer)


def _exhausted(stream: Iterator[tuple[str, torch.Tensor]]) -> None:
    extra = next(stream, None)
    if extra is not None:
        raise RuntimeError(f"weight transfer: the trainer sent {extra[0]}, which the layout does not have")
