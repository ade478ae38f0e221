"""rlc's bucketed weight transfer on the GPU, alone (torch only: no Ray, no vLLM), at Qwen2-0.5B's shapes in bf16.

    PYTHONPATH=.pp python bench/weight_transfer_gpu.py [--buckets-mb 2048] [--rounds 5]

(`.pp/rlc_runtime` a link to `runtime/`.) One GPU: the trainer's process and a receiving process on the same GPU,
through `IpcChannel` (CUDA IPC). Two GPUs or more: also `BroadcastChannel` (NCCL) from GPU 0 to GPU 1. The
receiver copies each bucket into weights of its own (what a rollout engine's load does), then checks them bit for
bit against the trainer's, which it rebuilds from the same seed. Prints seconds per transfer (median) and GB/s.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import time

import torch
import torch.multiprocessing as mp

from rlc_runtime.weight_transfer import BroadcastChannel, IpcChannel, plan_buckets, specs_of

LAYERS, HIDDEN, FFN, KV, VOCAB = 24, 896, 4864, 128, 151936  # Qwen2-0.5B


def qwen2_05b(device: str) -> list[tuple[str, torch.Tensor]]:
    shapes = [("model.embed_tokens.weight", (VOCAB, HIDDEN))]
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        shapes += [(p + "self_attn.q_proj.weight", (HIDDEN, HIDDEN)), (p + "self_attn.q_proj.bias", (HIDDEN,)),
                   (p + "self_attn.k_proj.weight", (KV, HIDDEN)), (p + "self_attn.k_proj.bias", (KV,)),
                   (p + "self_attn.v_proj.weight", (KV, HIDDEN)), (p + "self_attn.v_proj.bias", (KV,)),
                   (p + "self_attn.o_proj.weight", (HIDDEN, HIDDEN)), (p + "mlp.gate_proj.weight", (FFN, HIDDEN)),
                   (p + "mlp.up_proj.weight", (FFN, HIDDEN)), (p + "mlp.down_proj.weight", (HIDDEN, FFN)),
                   (p + "input_layernorm.weight", (HIDDEN,)), (p + "post_attention_layernorm.weight", (HIDDEN,))]
    shapes.append(("model.norm.weight", (HIDDEN,)))
    generator = torch.Generator(device=device).manual_seed(0)
    return [(name, torch.randn(shape, generator=generator, device=device, dtype=torch.bfloat16))
            for name, shape in shapes]


def receiver(kind: str, inbox: mp.Queue, outbox: mp.Queue, port: int, bucket_bytes: int, rounds: int) -> None:
    device = "cuda:1" if kind == "nccl" else "cuda:0"
    torch.cuda.set_device(device)
    expected = qwen2_05b(device)
    own = {name: torch.empty_like(t) for name, t in expected}
    buckets = plan_buckets(specs_of(expected), bucket_bytes)
    if kind == "ipc":
        channel: IpcChannel | BroadcastChannel = IpcChannel("cuda", buckets)
        channel.open(inbox.get())
    else:
        channel = BroadcastChannel("127.0.0.1", port, 1, 2, "cuda", 120)
    outbox.put("ready")
    for _ in range(rounds):
        if kind == "ipc":
            inbox.get()  # the trainer has filled its buffers
        for bucket in channel.receive(buckets):
            for name, view in bucket:
                own[name].copy_(view)
        torch.cuda.synchronize()
        outbox.put("done")
    outbox.put(all(torch.equal(own[n].view(torch.int16), t.view(torch.int16)) for n, t in expected))


def measure(kind: str, bucket_bytes: int, rounds: int) -> dict[str, float | bool | str]:
    torch.cuda.set_device("cuda:0")
    weights = qwen2_05b("cuda")
    buckets = plan_buckets(specs_of(weights), bucket_bytes)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    ctx = mp.get_context("spawn")
    inbox, outbox = ctx.Queue(), ctx.Queue()
    child = ctx.Process(target=receiver, args=(kind, inbox, outbox, port, bucket_bytes, rounds))
    child.start()
    if kind == "ipc":
        channel: IpcChannel | BroadcastChannel = IpcChannel("cuda", buckets)
        inbox.put(channel.export())
    else:
        channel = BroadcastChannel("127.0.0.1", port, 0, 2, "cuda", 120)
    assert outbox.get(timeout=300) == "ready"
    seconds = []
    for _ in range(rounds):
        start = time.perf_counter()
        channel.send(weights, buckets)
        if kind == "ipc":
            inbox.put("go")
        assert outbox.get(timeout=300) == "done"
        seconds.append(time.perf_counter() - start)
    bitwise = outbox.get(timeout=300)
    child.join(60)
    total = sum(t.numel() * t.element_size() for _, t in weights)
    median = statistics.median(seconds[1:] or seconds)
    return {"channel": kind, "bytes": total, "buckets": len(buckets), "median_s": median, "first_s": seconds[0],
            "GB_per_s": total / median / 1e9, "bitwise_equal": bitwise}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--buckets-mb", type=int, default=2048)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    kinds = ["ipc"] + (["nccl"] if torch.cuda.device_count() >= 2 else [])
    for kind in kinds:
        print(json.dumps(measure(kind, args.buckets_mb * 2**20, args.rounds)), flush=True)


if __name__ == "__main__":
    main()
