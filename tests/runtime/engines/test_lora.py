"""LoRA on the FSDP2 engine, on CPU: a frozen base with adapters the only trained (and optimised) tensors, the
reference equal to the untouched base model, merged rollout weights and the PEFT-format adapter equal to the
trained policy, and a checkpoint that restores adapters and their optimizer state."""

from __future__ import annotations

import copy
import os
import socket
from pathlib import Path

import pytest
import torch
from test_fsdp import make_batch, make_config, plain_log_probs

from rlc.config.root import RLCConfig
from rlc.upload import prepare_folder
from rlc_runtime.engines import make_reference
from rlc_runtime.engines.fsdp import FSDPEngine
from rlc_runtime.engines.update import Update, compute_log_probs, policy_update
from rlc_runtime.tiny import build_tiny_checkpoint

RANK, ALPHA = 4, 8


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_checkpoint(tmp_path_factory.mktemp("lora") / "qwen2", "qwen2")


def lora_config(checkpoint: Path, **model: object) -> RLCConfig:
    cfg = make_config(checkpoint, optim={"lr": 1e-2})
    cfg.actor_rollout_ref.model = cfg.actor_rollout_ref.model.model_copy(
        update={"lora_rank": RANK, "lora_alpha": ALPHA, **model})
    return cfg


def lora_update(checkpoint: Path, **model: object) -> Update:
    cfg = lora_config(checkpoint, **model)
    return policy_update(FSDPEngine(cfg, "actor", "cpu"), cfg)


def base_model(checkpoint: Path) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(checkpoint).eval()


def adapter_size(model: torch.nn.Module) -> int:
    """r x (in + out) for every Linear but the output layer: what all-linear adapts, counted on the plain model."""
    return sum(RANK * (m.in_features + m.out_features) for name, m in model.named_modules()
               if isinstance(m, torch.nn.Linear) and name != "lm_head")


def test_only_adapters_train_and_hold_optimizer_state(checkpoint: Path) -> None:
    update = lora_update(checkpoint)
    actor = update.engine
    base = base_model(checkpoint)
    trained = {n: p for n, p in actor.model.named_parameters() if p.requires_grad}
    assert trained and all(".lora_A." in n or ".lora_B." in n for n in trained)
    assert sum(p.numel() for p in trained.values()) == adapter_size(base)
    frozen = {n: p.detach().clone() for n, p in actor.model.named_parameters() if not p.requires_grad}
    update(make_batch())
    assert all(torch.equal(p, frozen[n]) for n, p in actor.model.named_parameters() if not p.requires_grad)
    assert any(p.abs().sum() > 0 for n, p in trained.items() if ".lora_B." in n)  # B starts at zero
    moments = [v for state in actor.optimizer.state.values() for k, v in state.items() if k != "step"]
    assert sum(v.numel() * v.element_size() for v in moments) == 2 * 4 * adapter_size(base)


def test_reference_is_the_base_model_and_the_rollout_gets_merged_weights(checkpoint: Path, tmp_path: Path) -> None:
    from peft import PeftModel

    cfg = lora_config(checkpoint, target_modules=["q_proj", "v_proj", "down_proj"])
    actor = FSDPEngine(cfg, "actor", "cpu")
    update = policy_update(actor, cfg)
    update(make_batch())
    batch = make_batch(seed=3)
    policy = compute_log_probs(actor, batch, 4)[0]
    base = plain_log_probs(base_model(checkpoint), batch)
    reference = compute_log_probs(make_reference(cfg, actor, "cpu"), batch, 4)[0]
    torch.testing.assert_close(reference, base, atol=1e-5, rtol=0)
    assert (policy - base).abs().max() > 1e-3  # the adapters changed the policy

    merged = base_model(checkpoint)
    weights = dict(actor.named_weights())
    assert set(weights) == set(merged.state_dict()) - {"lm_head.weight"}
    merged.load_state_dict(weights, strict=False)
    torch.testing.assert_close(plain_log_probs(merged, batch), policy, atol=1e-5, rtol=0)

    actor.save_hf(tmp_path / "adapter")
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in (tmp_path / "adapter").iterdir()}
    loaded = PeftModel.from_pretrained(base_model(checkpoint), tmp_path / "adapter").eval()
    torch.testing.assert_close(plain_log_probs(loaded, batch), policy, atol=1e-5, rtol=0)


def test_checkpoint_restores_adapters_and_optimizer(checkpoint: Path, tmp_path: Path) -> None:
    update = lora_update(checkpoint)
    update(make_batch())
    update.engine.save_checkpoint(tmp_path / "ckpt", update.state_dict())
    assert (tmp_path / "ckpt" / "lora_adapter" / "adapter_config.json").exists()
    assert prepare_folder(tmp_path / "ckpt", None, False) == tmp_path / "ckpt" / "lora_adapter"  # `rlc upload`
    saved_optim = copy.deepcopy(update.engine.optimizer.state_dict())
    continued = update(make_batch(seed=1))

    resumed = lora_update(checkpoint)
    resumed.load_state_dict(resumed.engine.load_checkpoint(tmp_path / "ckpt"))
    state = resumed.engine.optimizer.state_dict()["state"]
    assert all(torch.equal(entry[k], state[i][k]) for i, entry in saved_optim["state"].items() for k in entry)
    assert resumed(make_batch(seed=1))["actor/pg_loss"] == pytest.approx(continued["actor/pg_loss"], abs=1e-6)
    for (name, mine), (_, theirs) in zip(resumed.engine.named_weights(), update.engine.named_weights(), strict=True):
        torch.testing.assert_close(mine, theirs, atol=1e-6, rtol=0, msg=name)


def test_lora_adapter_path_starts_from_a_saved_adapter(checkpoint: Path, tmp_path: Path) -> None:
    update = lora_update(checkpoint)
    update(make_batch())
    update.engine.save_hf(tmp_path / "adapter")
    started = lora_update(checkpoint, lora_adapter_path=str(tmp_path / "adapter")).engine
    assert any(p.requires_grad for p in started.model.parameters())
    batch = make_batch(seed=2)
    torch.testing.assert_close(compute_log_probs(started, batch, 4)[0], compute_log_probs(update.engine, batch, 4)[0],
                               atol=1e-6, rtol=0)


def _rank(rank: int, world: int, port: int, checkpoint: Path, out: Path) -> None:
    """One rank of the world-size-2 test (module level: spawned processes import it)."""
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        cfg = lora_config(checkpoint)
        actor = FSDPEngine(cfg, "actor", "cpu")
        mine = make_batch().chunk(world)[rank]
        policy_update(actor, cfg)(mine)
        reference = compute_log_probs(make_reference(cfg, actor, "cpu"), mine, 2)[0]
        weights = {name: tensor.clone() for name, tensor in actor.named_weights()}
        actor.save_hf(out / "adapter")
        gathered = [None] * world
        dist.all_gather_object(gathered, reference)
        if rank == 0:
            torch.save({"weights": weights, "reference": torch.cat(gathered)}, out / "rank0.pt")
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_world_size_two_shards_the_frozen_base_and_matches_world_size_one(checkpoint: Path, tmp_path: Path) -> None:
    import torch.multiprocessing as mp
    from peft import PeftModel

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.spawn(_rank, args=(2, port, checkpoint, tmp_path), nprocs=2, join=True)
    two = torch.load(tmp_path / "rank0.pt", weights_only=False)

    update, batch = lora_update(checkpoint), make_batch()
    update(batch)  # one optimizer step over the same rows as the two ranks' halves
    for name, tensor in update.engine.named_weights():
        torch.testing.assert_close(two["weights"][name], tensor, atol=1e-5, rtol=0, msg=name)
    torch.testing.assert_close(two["reference"], plain_log_probs(base_model(checkpoint), batch), atol=1e-5, rtol=0)
    loaded = PeftModel.from_pretrained(base_model(checkpoint), tmp_path / "adapter").eval()
    torch.testing.assert_close(plain_log_probs(loaded, batch), compute_log_probs(update.engine, batch, 4)[0],
                               atol=1e-5, rtol=0)
