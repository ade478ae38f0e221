"""Ulysses sequence parallelism on CPU under gloo: two ranks of one sequence-parallel group (sp = 2) give the
log-probs, entropy, critic values and the updated weights of one unsharded rank (sp = 1) on the same rows; and
the all-to-alls move exactly the elements they should."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
from test_fsdp import make_batch, make_config, weights

from rlc_runtime.engines.fsdp import FSDPEngine
from rlc_runtime.engines.update import compute_log_probs, compute_values, policy_update
from rlc_runtime.tiny import build_tiny_checkpoint

ROWS = 4


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # qwen2 with 2 attention heads and 1 key/value head: the KV head is repeated for the two ranks
    return build_tiny_checkpoint(tmp_path_factory.mktemp("ulysses") / "qwen2", "qwen2")


@pytest.fixture(scope="module")
def windowed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # mistral with 4 heads over 2 key/value heads (split, not repeated) and a 3-token sliding window
    return build_tiny_checkpoint(tmp_path_factory.mktemp("ulysses") / "mistral", "mistral", hidden_size=256,
                                 num_key_value_heads=2, sliding_window=3)


def _config(checkpoint: Path, sp: int) -> Any:
    # Adam's eps at 1e-6: a gradient element near 1e-8 (the default eps) turns its float noise into a full step
    cfg = make_config(checkpoint, packed=False, mini=ROWS, micro=2, ulysses_sequence_parallel_size=sp,
                      optim={"override_optimizer_config": {"eps": 1e-6}})
    cfg.critic.ulysses_sequence_parallel_size = sp
    # recomputed layers must find the group and the mask again in backward (they travel as forward kwargs)
    cfg.actor_rollout_ref.model.enable_gradient_checkpointing = sp > 1
    return cfg


def _rank(rank: int, world: int, port: int, checkpoint: Path, windowed: Path, out: Path) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        results = {"all_to_all": _all_to_all_round_trip(rank, world)}
        cfg = _config(checkpoint, sp=2)
        mine = make_batch(rows=ROWS)  # one group: both ranks hold all the rows
        update = policy_update(FSDPEngine(cfg, "actor", "cpu"), cfg)
        results["data_parallel_size"] = update.engine.data_parallel_size
        results["log_probs"], results["entropy"] = compute_log_probs(update.engine, mine, 1, with_entropy=True)
        # a budget of 4 tokens per GPU is 8 per group of 2 (verl): the 6-token row fits, in 3 micro-batches
        results["dynamic"], _ = compute_log_probs(update.engine, mine, None, token_budget=4)
        results["metrics"] = update(mine)
        results["updated"] = weights(update.engine)
        results["values"] = compute_values(FSDPEngine(cfg, "critic", "cpu"), mine, 2)
        results["windowed"], _ = compute_log_probs(FSDPEngine(_config(windowed, sp=2), "ref", "cpu"), mine, 2)
        gathered: list[Any] = [None] * world
        dist.all_gather_object(gathered, results)
        if rank == 0:
            torch.save(gathered, out / "ranks.pt")
    finally:
        dist.destroy_process_group()


def _all_to_all_round_trip(rank: int, world: int) -> bool:
    """Sequence shards to head shards hold the full sequence of this rank's heads; back again is the identity."""
    from rlc_runtime.engines.ulysses import heads_to_seq, seq_to_heads

    full = torch.arange(2 * 4 * 6 * 3, dtype=torch.float32).reshape(2, 4, 6, 3)  # [b, heads, s, d]
    local = full[:, :, rank * 3:(rank + 1) * 3]
    heads = seq_to_heads(local, dist.group.WORLD)
    return torch.equal(heads, full[:, rank * 2:(rank + 1) * 2]) and torch.equal(heads_to_seq(heads, dist.group.WORLD),
                                                                             local)


def test_two_sequence_parallel_ranks_match_one_rank(checkpoint: Path, windowed: Path, tmp_path: Path) -> None:
    import torch.multiprocessing as mp

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.spawn(_rank, args=(2, port, checkpoint, windowed, tmp_path), nprocs=2, join=True)
    ranks = torch.load(tmp_path / "ranks.pt", weights_only=False)
    assert all(r["all_to_all"] for r in ranks)
    assert [r["data_parallel_size"] for r in ranks] == [1, 1]

    cfg, batch = _config(checkpoint, sp=1), make_batch(rows=ROWS)
    update = policy_update(FSDPEngine(cfg, "actor", "cpu"), cfg)
    log_probs, entropy = compute_log_probs(update.engine, batch, 1, with_entropy=True)
    assert log_probs.abs().sum() > 0
    values = compute_values(FSDPEngine(cfg, "critic", "cpu"), batch, 2)
    window, _ = compute_log_probs(FSDPEngine(_config(windowed, sp=1), "ref", "cpu"), batch, 2)
    for r in ranks:  # each rank of the group returns the group's rows
        torch.testing.assert_close(r["log_probs"], log_probs, atol=1e-5, rtol=0)
        torch.testing.assert_close(r["entropy"], entropy, atol=1e-5, rtol=0)
        torch.testing.assert_close(r["values"], values, atol=1e-5, rtol=0)
        torch.testing.assert_close(r["dynamic"], log_probs, atol=1e-5, rtol=0)
        torch.testing.assert_close(r["windowed"], window, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="a sequence of 6 tokens exceeds the micro-batch token budget 4"):
        compute_log_probs(update.engine, batch, None, token_budget=4)

    initial = weights(update.engine)
    metrics = update(batch)
    for key in ("actor/grad_norm", "actor/pg_loss", "actor/kl_loss", "actor/entropy"):
        for r in ranks:
            assert r["metrics"][key] == pytest.approx(metrics[key], rel=1e-4, abs=1e-6), key
    moved = 0.0
    for name, tensor in weights(update.engine).items():
        moved = max(moved, float((tensor - initial[name]).abs().max()))
        for r in ranks:
            torch.testing.assert_close(r["updated"][name], tensor, atol=1e-5, rtol=0, msg=name)
    assert moved > 1e-4  # the step changed the weights, so equal weights compare two real updates
