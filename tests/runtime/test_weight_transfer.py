"""The bucketed weight transfer: a layout both ends derive alike, and raw bytes moved exactly over a real gloo group
(three ranks on threads of this process: gloo runs one rank per thread as well as per process)."""

from __future__ import annotations

import socket
import threading

import pytest
import torch

from rlc_runtime.weight_transfer import (
    BroadcastChannel,
    IpcChannel,
    WeightSpec,
    bucket_size,
    plan_buckets,
    specs_of,
)


def test_buckets_pack_in_order_at_aligned_offsets() -> None:
    specs = [WeightSpec("a", (10,), torch.float32), WeightSpec("b", (3, 3), torch.bfloat16),
             WeightSpec("c", (300,), torch.float32), WeightSpec("d", (1,), torch.int64)]
    # a: 40 bytes at 0; b: 18 bytes at 256 (274 <= 512); c: 1200 bytes, larger than a bucket: alone; d: 8 bytes
    buckets = plan_buckets(specs, 512)
    assert [[(slot.spec.name, slot.offset) for slot in bucket] for bucket in buckets] == [
        [("a", 0), ("b", 256)], [("c", 0)], [("d", 0)]]
    assert [bucket_size(b) for b in buckets] == [512, 1280, 256]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _transfer(weights: list[tuple[str, torch.Tensor]], bucket_bytes: int,
              receivers: int = 2) -> dict[int, list[tuple[str, torch.Tensor]]]:
    buckets, port = plan_buckets(specs_of(weights), bucket_bytes), _free_port()
    received: dict[int, list[tuple[str, torch.Tensor]]] = {}
    errors: list[BaseException] = []

    def rank(r: int) -> None:
        try:
            channel = BroadcastChannel("127.0.0.1", port, r, receivers + 1, "cpu", 60)
            if r == 0:
                channel.send(weights, buckets)
            else:  # copies: the views of a bucket live only until the next one arrives
                received[r] = [(name, t.clone()) for bucket in channel.receive(buckets) for name, t in bucket]
        except BaseException as error:  # noqa: BLE001 - reported by the test thread
            errors.append(error)

    threads = [threading.Thread(target=rank, args=(r,)) for r in range(receivers + 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors
    return received


def test_receivers_get_the_trainers_bits_through_several_buckets() -> None:
    generator = torch.Generator().manual_seed(0)
    weights = [("embed.weight", torch.randn(37, 16, generator=generator)),
               ("norm.weight", torch.randn(16, generator=generator).to(torch.bfloat16)),
               ("big.weight", torch.randn(4096, generator=generator)),  # 16 KiB: a bucket of its own
               ("ids", torch.arange(-5, 6)),
               ("odd.weight", torch.randn(3, 7, generator=generator).to(torch.float16))]
    weights.append(("nan.weight", torch.tensor([float("nan"), -0.0, float("inf")])))  # bits, not values
    received = _transfer(weights, bucket_bytes=4096)
    for rank in (1, 2):
        assert [name for name, _ in received[rank]] == [name for name, _ in weights]
        for (_, sent), (_, got) in zip(weights, received[rank], strict=True):
            assert got.dtype == sent.dtype and got.shape == sent.shape
            assert got.reshape(-1).view(torch.uint8).tolist() == sent.reshape(-1).view(torch.uint8).tolist()


def test_a_weight_the_layout_does_not_expect_is_an_error() -> None:
    buckets = plan_buckets([WeightSpec("a", (2,), torch.float32)], 1024)
    channel = BroadcastChannel("127.0.0.1", _free_port(), 0, 1, "cpu", 10)
    with pytest.raises(RuntimeError, match=r"sent b \(2,\).*expects"):
        channel.send([("b", torch.zeros(2))], buckets)
    with pytest.raises(RuntimeError, match="sent c, which the layout does not have"):
        channel.send([("a", torch.zeros(2)), ("c", torch.zeros(1))], buckets)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal where there is no GPU")
def test_cuda_ipc_refuses_without_a_gpu() -> None:
    with pytest.raises(RuntimeError, match="CUDA IPC weight transfer .* needs a GPU"):
        IpcChannel("cpu", plan_buckets([WeightSpec("a", (2,), torch.float32)], 1024))
