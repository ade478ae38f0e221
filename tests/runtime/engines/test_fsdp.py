"""The FSDP2 engine under the shared update on CPU: log-probs against a plain HF forward, packing against padding,
exact gradient accumulation for every loss aggregation mode, critic updates, checkpoints and weights, and world
size 2 under gloo (two spawned processes) against world size 1 on the same data."""

from __future__ import annotations

import copy
import os
import socket
from pathlib import Path
from typing import Any

import pytest
import torch

from rlc.config.defaults import fill_defaults
from rlc.config.root import RLCConfig
from rlc_runtime.batch import TokenBatch
from rlc_runtime.engines.fsdp import FSDPEngine
from rlc_runtime.engines.optim import Schedule
from rlc_runtime.engines.update import Update, compute_log_probs, compute_values, critic_update, policy_update
from rlc_runtime.tiny import build_model, build_tiny_checkpoint

TEMPERATURE = 0.7
LOSS_MODES = ("token-mean", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_checkpoint(tmp_path_factory.mktemp("fsdp") / "qwen2", "qwen2")


def make_batch(rows: int = 8, prompt: int = 6, response: int = 5, vocab: int = 271, seed: int = 0) -> TokenBatch:
    """verl's layout with prompts and responses of different lengths (the last one empty), old/ref log-probs,
    advantages, values and returns."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(6, vocab, (rows, prompt + response), generator=gen)
    attention = torch.zeros_like(ids)
    for i in range(rows):
        attention[i, prompt - 1 - i % prompt: prompt + 1 + (3 * i) % response] = 1
    attention[-1, prompt:] = 0  # a prompt with an empty response: the seq-mean modes must not count it
    ids[attention == 0] = 0
    batch = TokenBatch(ids, attention, (attention.cumsum(-1) - 1).clamp(min=0), ids[:, prompt:].clone(),
                       attention[:, prompt:].float())
    batch.old_log_probs = (torch.randn(rows, response, generator=gen) * 0.1 - 5.5) * batch.response_mask
    batch.ref_log_probs = batch.old_log_probs + 0.05 * batch.response_mask
    batch.advantages = torch.randn(rows, 1, generator=gen) * batch.response_mask
    batch.values = torch.randn(rows, response, generator=gen) * batch.response_mask
    batch.returns = batch.values + torch.randn(rows, response, generator=gen) * batch.response_mask
    return batch


def make_config(checkpoint: Path, packed: bool = True, mini: int = 8, micro: int = 2, mode: str = "token-mean",
                optim: dict[str, Any] | None = None, model: dict[str, Any] | None = None, **actor: Any) -> RLCConfig:
    """A resolved config whose actor takes `mini` rows per optimizer step (ppo_mini_batch_size x rollout.n on one
    rank) in micro-batches of `micro`; the critic shares the sizes."""
    optim = {"lr": 1e-3, "weight_decay": 0.0} | (optim or {})
    actor = {"use_kl_loss": True, "kl_loss_coef": 0.1, "entropy_coeff": 0.01, "clip_ratio_low": 0.2,
             "clip_ratio_high": 0.28, "ppo_mini_batch_size": mini // 2, "ppo_micro_batch_size_per_gpu": micro,
             "loss_agg_mode": mode, "optim": optim} | actor
    return fill_defaults(RLCConfig.model_validate({
        "data": {"train_files": "unused.jsonl", "train_batch_size": 4},
        "algorithm": {"adv_estimator": "gae"},
        "critic": {"optim": {"lr": 1e-3}, "loss_agg_mode": "token-mean"},
        "actor_rollout_ref": {"model": {"path": str(checkpoint), "use_remove_padding": packed} | (model or {}),
                              "rollout": {"n": 2, "temperature": TEMPERATURE}, "actor": actor}}))


def engine(checkpoint: Path, role: str = "actor", cfg: RLCConfig | None = None, **settings: Any) -> FSDPEngine:
    return FSDPEngine(cfg or make_config(checkpoint, **settings), role, "cpu")


def trained(checkpoint: Path, role: str = "actor", **settings: Any) -> Update:
    cfg = make_config(checkpoint, **settings)
    return (policy_update if role == "actor" else critic_update)(FSDPEngine(cfg, role, "cpu"), cfg)


def plain_log_probs(model: torch.nn.Module, batch: TokenBatch) -> torch.Tensor:
    """Each row alone, unpadded, through the HF model: the reference every path must match."""
    out = torch.zeros(batch.responses.shape)
    prompt = batch.prompt_length
    for i in range(len(batch)):
        keep = batch.attention_mask[i].bool()
        start = int((~keep[:prompt]).sum())  # left padding of this row's prompt
        ids = batch.input_ids[i][keep][None]
        n = int(batch.response_mask[i].sum())
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0, prompt - start - 1: prompt - start - 1 + n] / TEMPERATURE
        out[i, :n] = torch.log_softmax(logits, -1).gather(-1, batch.responses[i, :n, None])[:, 0]
    return out


def weights(e: FSDPEngine) -> dict[str, torch.Tensor]:
    return {name: tensor.clone() for name, tensor in e.named_weights()}


@pytest.mark.parametrize("arch", ["qwen2", "llama"])
def test_log_probs_equal_a_plain_forward_packed_and_padded(tmp_path: Path, arch: str) -> None:
    from transformers import AutoModelForCausalLM

    checkpoint = build_tiny_checkpoint(tmp_path / arch, arch)
    batch = make_batch()
    expected = plain_log_probs(AutoModelForCausalLM.from_pretrained(checkpoint), batch)
    ref = engine(checkpoint, "ref", packed=True)
    assert not ref.packed  # sdpa has no varlen kernel: padded batches are faster (see engines/packing.py)
    for packed in (True, False):
        ref.packed = packed  # both paths, as a model with flash attention would take the packed one
        log_probs, entropy = compute_log_probs(ref, batch, 3, with_entropy=True)
        torch.testing.assert_close(log_probs, expected, atol=1e-5, rtol=0)
        assert entropy.shape == batch.responses.shape and (entropy[batch.response_mask.bool()] > 0).all()


@pytest.mark.parametrize("arch", ["qwen2", "llama"])
def test_packed_flex_attention_log_probs_equal_a_plain_forward(tmp_path: Path, arch: str,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The packed path under flex_attention (the GPU host's default, see engines/packing.py), its row padded to a
    multiple of 128 with a dummy sequence. Eager flex (dynamo off): torch compiles flex on CUDA only in rlc's runs,
    and flex has no backward on CPU, so this checks the document mask the compiled kernel gets, forward only."""
    from transformers import AutoModelForCausalLM

    checkpoint = build_tiny_checkpoint(tmp_path / arch, arch)
    batch = make_batch()
    expected = plain_log_probs(AutoModelForCausalLM.from_pretrained(checkpoint), batch)
    ref = engine(checkpoint, "ref", packed=True, model={"override_config": {"attn_implementation": "flex_attention"}})
    assert ref.packed and ref.model.config._attn_implementation == "flex_attention"
    assert int(batch.attention_mask.sum()) % 128  # the dummy sequence is there
    from transformers.integrations.flex_attention import WrappedFlexAttention

    monkeypatch.setenv("TORCHDYNAMO_DISABLE", "1")  # eager: torch.compile takes minutes on two CPU cores
    monkeypatch.setattr(WrappedFlexAttention, "_is_flex_compiled", False)  # re-wrapped, uncompiled
    log_probs, _ = compute_log_probs(ref, batch, 3)
    torch.testing.assert_close(log_probs, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("arch", ["mistral", "gemma", "phi", "phi3"])
def test_packed_equals_padded_for_other_families(arch: str) -> None:
    from rlc_runtime.engines.packing import response_logits

    model, batch = build_model(arch, 271).eval(), make_batch()
    with torch.no_grad():
        padded, packed = (response_logits(model, batch, "cpu", p) for p in (False, True))
    valid = batch.response_mask.bool()
    torch.testing.assert_close(packed[valid], padded[valid], atol=1e-5, rtol=0)


def test_update_policy_moves_the_weights_and_reports_verl_metrics(checkpoint: Path) -> None:
    update = trained(checkpoint, mini=4)  # two optimizer steps per update
    actor = update.engine
    before = weights(actor)
    metrics = update(make_batch())
    assert {"actor/pg_loss", "actor/kl_loss", "actor/entropy", "actor/pg_clipfrac", "actor/ppo_kl",
            "actor/grad_norm", "actor/lr"} <= set(metrics)
    assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values())
    assert metrics["actor/lr"] == 1e-3 and metrics["actor/grad_norm"] > 0
    after = weights(actor)
    assert "lm_head.weight" not in after  # tied: the rollout gets the embedding once
    assert all(not torch.equal(before[k], after[k]) for k in before if "norm" not in k)


@pytest.mark.parametrize("mode", LOSS_MODES)
def test_micro_batches_accumulate_to_the_whole_batch_gradient(checkpoint: Path, mode: str) -> None:
    # Adam with a large eps steps by about lr x gradient, so the weight change shows the gradient, scale included.
    optim = {"lr": 1e-2, "override_optimizer_config": {"eps": 1.0}}
    results = []
    for micro in (3, 8):  # uneven micro-batches (3+3+2 rows) against one
        update = trained(checkpoint, micro=micro, mode=mode, optim=optim)
        before = weights(update.engine)
        metrics = update(make_batch())
        results.append((metrics["actor/grad_norm"], {k: v - before[k] for k, v in weights(update.engine).items()}))
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-5)
    for name, delta in results[0][1].items():
        torch.testing.assert_close(delta, results[1][1][name], atol=1e-8, rtol=1e-4)


def test_critic_values_update_and_save(checkpoint: Path, tmp_path: Path) -> None:
    update = trained(checkpoint, "critic", mini=8)
    critic, batch = update.engine, make_batch()
    values = compute_values(critic, batch, 3)
    assert values.shape == batch.responses.shape and (values[~batch.response_mask.bool()] == 0).all()
    before = weights(critic)
    metrics = update(batch)
    assert {"critic/vf_loss", "critic/vf_clipfrac", "critic/grad_norm", "critic/lr"} <= set(metrics)
    after = weights(critic)
    assert not torch.equal(before["score.weight"], after["score.weight"])
    assert not torch.equal(before["model.layers.0.mlp.up_proj.weight"], after["model.layers.0.mlp.up_proj.weight"])
    critic.save_hf(tmp_path / "critic")
    reloaded = engine(tmp_path / "critic", "critic")
    torch.testing.assert_close(compute_values(reloaded, batch, 8), compute_values(critic, batch, 8))


def test_schedule_warmup_then_cosine(checkpoint: Path) -> None:
    assert Schedule("cosine", -1, 0.25, -1, 0.1, 0.5)(0) == 1.0  # length unknown: no warmup, no decay
    schedule = Schedule("cosine", -1, 0.25, 8, 0.1, 0.5)
    assert [schedule(s) for s in (0, 1, 2)] == [0.0, 0.5, 1.0]
    assert schedule(8) == pytest.approx(0.1) and 0.1 < schedule(5) < 1.0
    linear = Schedule("linear", 0, 0.0, 10, 0.0, 0.5)
    assert [linear(s) for s in (0, 5, 10)] == [1.0, 0.5, 0.0]

    update = trained(checkpoint, optim={"lr": 1e-3, "lr_warmup_steps_ratio": 0.5, "total_training_steps": 4})
    assert update(make_batch())["actor/lr"] == 0.0  # verl's warmup starts at 0
    assert update(make_batch())["actor/lr"] == pytest.approx(5e-4)


def test_checkpoint_round_trip_restores_weights_optimizer_and_schedule(checkpoint: Path, tmp_path: Path) -> None:
    optim = {"lr": 1e-3, "lr_scheduler_type": "linear", "total_training_steps": 4}
    update = trained(checkpoint, optim=optim)
    actor = update.engine
    update(make_batch())
    saved_weights, saved_optim = weights(actor), copy.deepcopy(actor.optimizer.state_dict())
    actor.save_checkpoint(tmp_path / "ckpt", update.state_dict())
    assert (tmp_path / "ckpt" / "huggingface" / "config.json").exists()
    update(make_batch(seed=1))

    fresh = trained(checkpoint, optim=optim)
    for restored in (update, fresh):
        restored.load_state_dict(restored.engine.load_checkpoint(tmp_path / "ckpt"))
        assert all(torch.equal(v, saved_weights[k]) for k, v in weights(restored.engine).items())
        state = restored.engine.optimizer.state_dict()["state"]
        for index, entry in saved_optim["state"].items():
            assert all(torch.equal(entry[key], state[index][key]) for key in entry)
        # the schedule resumes at update 1 of 4, a quarter into its linear decay
        assert restored(make_batch())["actor/lr"] == pytest.approx(7.5e-4)
    with pytest.raises(FileNotFoundError, match="world size"):
        fresh.engine.load_checkpoint(tmp_path)


def test_named_weights_and_save_hf_match_an_unsharded_model(checkpoint: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    reference = AutoModelForCausalLM.from_pretrained(checkpoint).state_dict()
    update = trained(checkpoint)
    actor = update.engine
    named = weights(actor)
    assert set(named) == set(reference) - {"lm_head.weight"}
    assert all(torch.equal(tensor, reference[name]) for name, tensor in named.items())
    update(make_batch())
    actor.save_hf(tmp_path / "hf")
    assert {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json"} <= {
        p.name for p in (tmp_path / "hf").iterdir()}
    saved = AutoModelForCausalLM.from_pretrained(tmp_path / "hf").state_dict()
    assert all(torch.equal(saved[name], tensor) for name, tensor in weights(actor).items())


# world size 2 ---------------------------------------------------------------------------------------------------
def _rank(rank: int, world: int, port: int, checkpoint: Path, out: Path) -> None:
    """One rank of the world-size-2 test (module level: spawned processes import it)."""
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        from datetime import timedelta

        dist.barrier()
        update = trained(checkpoint, mini=4)
        actor = update.engine
        initial = weights(actor)
        mine = make_batch(rows=8).chunk(world)[rank]
        log_probs, _ = compute_log_probs(actor, mine, 2)
        # a budget of 11 tokens: rank 0's rows (2, 6, 5, 9 tokens) fit in 2 micro-batches, rank 1's (8, 7, 5, 2)
        # need 3; both must run 3 forwards (FSDP gathers are collectives) and give the fixed batches' log-probs
        dynamic, _ = compute_log_probs(actor, mine, None, token_budget=11)
        dynamic_equal = torch.allclose(dynamic, log_probs, atol=1e-6, rtol=0)
        metrics = update(mine)
        updated = weights(actor)
        local_optim = {i: {k: (v.to_local() if hasattr(v, "to_local") else v).clone() for k, v in s.items()}
                       for i, s in actor.optimizer.state_dict()["state"].items()}
        actor.save_checkpoint(out / "ckpt", update.state_dict())
        update(mine)
        update.load_state_dict(actor.load_checkpoint(out / "ckpt"))
        restored = all(torch.equal(v, updated[k]) for k, v in weights(actor).items())
        optim_back = all(torch.equal(v.to_local() if hasattr(v, "to_local") else v, local_optim[i][k])
                         for i, s in actor.optimizer.state_dict()["state"].items() for k, v in s.items())
        actor.save_hf(out / "hf")
        offloaded = {}  # the same first update with FSDP2's CPU offload, and with the optimizer state offloaded
        for kind in ("param_offload", "optimizer_offload"):
            other = trained(checkpoint, mini=4, fsdp_config={kind: True})
            assert getattr(other.engine, {"param_offload": "offloads_params",
                                          "optimizer_offload": "offloads_optimizer"}[kind])
            other(mine)
            offloaded[kind] = weights(other.engine)
        gathered = [None] * world
        dist.all_gather_object(gathered, log_probs)
        if rank == 0:
            torch.save({"initial": initial, "log_probs": torch.cat(gathered), "metrics": metrics,
                        "updated": updated, "restored": restored, "optim_back": optim_back,
                        "offloaded": offloaded, "dynamic_equal": dynamic_equal}, out / "rank0.pt")
        dist.barrier(timeout=timedelta(seconds=60))
    finally:
        dist.destroy_process_group()


def test_world_size_two_matches_world_size_one(checkpoint: Path, tmp_path: Path) -> None:
    import torch.multiprocessing as mp
    from transformers import AutoModelForCausalLM

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.spawn(_rank, args=(2, port, checkpoint, tmp_path), nprocs=2, join=True)
    two = torch.load(tmp_path / "rank0.pt", weights_only=False)

    reference = AutoModelForCausalLM.from_pretrained(checkpoint).state_dict()
    assert set(two["initial"]) == set(reference) - {"lm_head.weight"}
    assert all(torch.equal(tensor, reference[name]) for name, tensor in two["initial"].items())

    update = trained(checkpoint, mini=4)
    one, batch = update.engine, make_batch(rows=8)
    torch.testing.assert_close(two["log_probs"], compute_log_probs(one, batch, 2)[0], atol=1e-5, rtol=0)
    # Each rank's mini-batches are its own rows, so world size 1 sees them in the order the ranks' steps do.
    metrics = update(batch.select([0, 1, 4, 5, 2, 3, 6, 7]))
    for key in ("actor/grad_norm", "actor/pg_loss", "actor/kl_loss", "actor/entropy", "actor/pg_clipfrac"):
        assert two["metrics"][key] == pytest.approx(metrics[key], rel=1e-4, abs=1e-6), key
    for name, tensor in weights(one).items():
        torch.testing.assert_close(two["updated"][name], tensor, atol=1e-5, rtol=0)
    assert two["restored"] and two["optim_back"] and two["dynamic_equal"]
    for kind, offloaded in two["offloaded"].items():
        for name, tensor in offloaded.items():
            torch.testing.assert_close(tensor, two["updated"][name], atol=1e-6, rtol=0, msg=f"{kind}: {name}")
    saved = AutoModelForCausalLM.from_pretrained(tmp_path / "hf").state_dict()
    assert all(torch.equal(saved[name], tensor) for name, tensor in two["updated"].items())
    assert sorted(p.name for p in (tmp_path / "ckpt").glob("model_world_size_2_rank_*.pt")) == [
        "model_world_size_2_rank_0.pt", "model_world_size_2_rank_1.pt"]
