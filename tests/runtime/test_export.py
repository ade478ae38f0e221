"""Consolidating verl's sharded checkpoints: made here the way verl saves them (FSDP2 under gloo, one file per
rank), joined back into weights equal to the unsharded model's, with clear errors for missing or mixed shards."""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, Qwen2Config, Qwen2ForCausalLM

from rlc_runtime.export import CheckpointError, consolidate_verl, shard_files

WORLD = 2


def tiny_model() -> Qwen2ForCausalLM:
    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, head_dim=32, tie_word_embeddings=False)
    return Qwen2ForCausalLM(config)


def _save_sharded(rank: int, out: str, port: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    from torch.distributed.fsdp import fully_shard

    model = tiny_model()
    for layer in model.model.layers:
        fully_shard(layer)
    fully_shard(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.arange(8)[None], labels=torch.arange(8)[None]).loss.backward()
    optimizer.step()
    torch.save(model.state_dict(), f"{out}/model_world_size_{WORLD}_rank_{rank}.pt")
    torch.save(optimizer.state_dict(), f"{out}/optim_world_size_{WORLD}_rank_{rank}.pt")
    full = {k: v.full_tensor() for k, v in model.state_dict().items()}
    if rank == 0:
        torch.save(full, f"{out}/expected.pt")
        model.config.save_pretrained(f"{out}/huggingface")
    dist.barrier()  # a rank that leaves while gloo still talks to it aborts (SIGABRT)
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def verl_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("global_step_3") / "actor"
    out.mkdir()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_save_sharded, args=(str(out), port), nprocs=WORLD)
    return out


def test_consolidated_weights_equal_the_unsharded_model(verl_checkpoint: Path, tmp_path: Path) -> None:
    out = consolidate_verl(verl_checkpoint, tmp_path / "hf", with_optimizer=True)
    expected = torch.load(verl_checkpoint / "expected.pt")
    weights = load_file(out / "model.safetensors")
    assert weights.keys() == expected.keys()
    for name, tensor in expected.items():
        assert torch.equal(weights[name], tensor), name
    model = AutoModelForCausalLM.from_pretrained(out)  # loads as a normal HF model
    assert torch.equal(model.state_dict()["lm_head.weight"], expected["lm_head.weight"])
    optimizer = torch.load(out / "optimizer.pt")
    assert set(optimizer["state"]) == set(expected)  # every parameter's state, keyed by name
    exp_avg = optimizer["state"]["model.embed_tokens.weight"]["exp_avg"]
    assert exp_avg.shape == expected["model.embed_tokens.weight"].shape and exp_avg.abs().sum() > 0


def test_missing_rank_is_named(verl_checkpoint: Path, tmp_path: Path) -> None:
    broken = tmp_path / "actor"
    shutil.copytree(verl_checkpoint, broken)
    (broken / f"model_world_size_{WORLD}_rank_1.pt").unlink()
    with pytest.raises(CheckpointError, match=r"rank\(s\) \[1\] are missing"):
        shard_files(broken, "model")
    assert not (tmp_path / "hf").exists()


def test_shards_of_different_shapes_are_refused(verl_checkpoint: Path, tmp_path: Path) -> None:
    broken = tmp_path / "actor"
    shutil.copytree(verl_checkpoint, broken)
    shard = torch.load(broken / f"model_world_size_{WORLD}_rank_1.pt", weights_only=False)
    name = "model.embed_tokens.weight"
    shard[name] = _truncated(shard[name])
    torch.save(shard, broken / f"model_world_size_{WORLD}_rank_1.pt")
    with pytest.raises(CheckpointError, match="model.embed_tokens.weight"):
        consolidate_verl(broken, tmp_path / "hf")
    assert not (tmp_path / "hf").exists()


def _truncated(tensor: torch.Tensor) -> torch.Tensor:
    """The same DTensor metadata over one row fewer: what a shard from another run's layout looks like."""
    local = tensor.to_local()[:-1]
    tensor._local_tensor = local
    return tensor


def test_rlc_upload_consolidates_through_the_runtime_program(verl_checkpoint: Path, tmp_path: Path) -> None:
    """The compiler's `prepare_folder` runs `python -m rlc_runtime.export` (it never imports the runtime)."""
    from rlc.upload import UploadError, prepare_folder

    checkpoint = tmp_path / "global_step_3"
    shutil.copytree(verl_checkpoint.parent, checkpoint)
    out = prepare_folder(checkpoint, None, include_optimizer=False)
    assert out == checkpoint / "actor" / "huggingface_consolidated"
    expected = torch.load(verl_checkpoint / "expected.pt")
    weights = load_file(out / "model.safetensors")
    assert weights.keys() == expected.keys() and all(torch.equal(weights[k], v) for k, v in expected.items())
    (checkpoint / "actor" / f"model_world_size_{WORLD}_rank_1.pt").unlink()
    shutil.rmtree(out)
    with pytest.raises(UploadError, match=r"rank\(s\) \[1\] are missing"):
        prepare_folder(checkpoint, None, include_optimizer=False)
