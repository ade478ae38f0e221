"""The Megatron engine on mixture-of-experts models (Qwen3-MoE, Qwen2-MoE), on CPU, against Hugging Face.

Two spawned gloo ranks build `MegatronEngine`s from tiny random MoE checkpoints (4 experts, top-2, every layer MoE;
Qwen2-MoE with its gated shared expert and top-k probabilities left unnormalised, Qwen3-MoE with q/k norms and
normalised ones) at expert parallel 1 (each rank holds all experts) and 2 (each holds two; tokens reach their
experts through megatron's all-to-all dispatcher over gloo). Each rank gets its own slice of one batch, as the
trainer scatters it. Log-probs and entropy must equal the Hugging Face model's (fp32); `named_weights` must give
back the checkpoint's names and values (transformers' fused `mlp.experts.gate_up_proj` / `down_proj`, which the
FSDP engine and vLLM's loader use), gathered from both expert ranks; one update must land where the FSDP engine's
does from the same weights and batch (so the experts' gradients, reduced over their own data-parallel group, are
right); a checkpoint round trip must restore weights and optimizer exactly. (Tensor parallelism with MoE is
refused: megatron's MoE layer trains under TP only with sequence parallelism, which its torch norms refuse.)

The CUDA stand-in is `test_megatron_engine.cuda_as_cpu` (its docstring says what it answers).
"""

from __future__ import annotations

import os
import socket
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from test_megatron_engine import (
    TOKENIZER,
    _actor_run,
    cuda_as_cpu,
    hf_reference,
    make_batch,
    make_config,
)
from transformers import Qwen2MoeConfig, Qwen2MoeForCausalLM, Qwen3MoeConfig, Qwen3MoeForCausalLM

TINY = dict(vocab_size=270, hidden_size=64, intermediate_size=96, moe_intermediate_size=32, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, head_dim=16, num_experts=4, num_experts_per_tok=2,
            rms_norm_eps=1e-6, max_position_embeddings=256, tie_word_embeddings=False)
# name -> (family, tensor parallel, expert parallel, expert-tensor parallel), each on 2 ranks
RUNS = {"qwen3_moe/ep1": ("qwen3_moe", 1, 1, None), "qwen3_moe/ep2": ("qwen3_moe", 1, 2, None),
        "qwen2_moe/ep2": ("qwen2_moe", 1, 2, None)}


def write_moe_model(family: str, directory: Path) -> Path:
    path = directory / family
    if path.exists():
        return path
    torch.manual_seed(7)
    if family == "qwen3_moe":
        model = Qwen3MoeForCausalLM(Qwen3MoeConfig(**TINY, norm_topk_prob=True, rope_theta=1e6))
    else:
        model = Qwen2MoeForCausalLM(Qwen2MoeConfig(**TINY, shared_expert_intermediate_size=48, norm_topk_prob=False))
    with torch.no_grad():  # random everywhere, so a misplaced expert cannot pass
        for name, p in model.named_parameters():
            p.copy_(torch.randn_like(p) * 0.1 + ("norm" in name))
    model.save_pretrained(path)
    for f in TOKENIZER.glob("tokenizer*"):
        (path / f.name).write_bytes(f.read_bytes())
    return path


def _worker(rank: int, world: int, port: int, out_dir: str, models: dict[str, str]) -> None:
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    import torch.distributed as dist
    from megatron.core import parallel_state

    from rlc_runtime.engines.megatron import MegatronEngine

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", world_size=world, rank=rank)
    results: dict[str, Any] = {}
    with cuda_as_cpu():
        for name, (family, tp, ep, etp) in RUNS.items():
            cfg = make_config(Path(models[family]), tp, ep=ep, etp=etp)
            engine = MegatronEngine(cfg, role="actor", device="cpu")
            checkpoint = Path(out_dir) / f"ckpt_{name.replace('/', '_')}"
            results[name] = _actor_run(engine, make_batch().chunk(world)[rank], checkpoint, cfg)
            parallel_state.destroy_model_parallel()
    torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.barrier()  # a rank that leaves while gloo still talks to it aborts (SIGABRT)
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("megatron_moe")
    models = {family: str(write_moe_model(family, out)) for family, *_ in RUNS.values()}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.multiprocessing.spawn(_worker, args=(2, port, str(out), models), nprocs=2, join=True)
    return {"ranks": [torch.load(out / f"rank{r}.pt") for r in range(2)], "models": models}


@pytest.mark.parametrize("run", sorted(RUNS))
def test_moe_log_probs_and_entropy_equal_hugging_face(run: str, runs: dict[str, Any]) -> None:
    want_lp, want_entropy, _, _ = hf_reference(runs["models"][RUNS[run][0]])
    mask = make_batch().response_mask.bool()
    got_lp = torch.cat([r[run]["log_probs"] for r in runs["ranks"]])  # each rank returns its own slice
    got_entropy = torch.cat([r[run]["entropy"] for r in runs["ranks"]])
    torch.testing.assert_close(got_lp[mask], want_lp[mask], atol=1e-4, rtol=0)
    torch.testing.assert_close(got_entropy[mask], want_entropy[mask], atol=1e-4, rtol=0)


@pytest.mark.parametrize("run", sorted(RUNS))
def test_moe_named_weights_are_the_checkpoint_under_hugging_face_names(run: str, runs: dict[str, Any]) -> None:
    *_, want = hf_reference(runs["models"][RUNS[run][0]])
    assert any(name.endswith("mlp.experts.gate_up_proj") for name in want)
    for rank in runs["ranks"]:  # every rank gathers the full tensors, experts from both expert-parallel ranks
        got = rank[run]["before"]
        assert list(got) == list(want)
        for name, tensor in want.items():
            assert torch.equal(got[name], tensor), name


@pytest.mark.parametrize("run", sorted(RUNS))
def test_moe_update_lands_where_the_fsdp_engine_does(run: str, runs: dict[str, Any]) -> None:
    from rlc_runtime.engines.fsdp import FSDPEngine
    from rlc_runtime.engines.update import policy_update

    family, tp, ep, etp = RUNS[run]
    cfg = make_config(Path(runs["models"][family]), tp, ep=ep, etp=etp)
    fsdp = FSDPEngine(cfg, "actor", "cpu")  # one rank, the whole batch: the reference
    ranks = [r[run] for r in runs["ranks"]]
    batch = make_batch()
    batch.old_log_probs, batch.ref_log_probs, batch.advantages = (
        torch.cat([r["targets"][k] for r in ranks]) for k in ("old_log_probs", "ref_log_probs", "advantages"))
    want = policy_update(fsdp, cfg)(batch)
    got = ranks[0]["metrics"]
    for key in ("actor/pg_loss", "actor/kl_loss", "actor/entropy", "actor/grad_norm"):
        assert got[key] == pytest.approx(want[key], rel=1e-4, abs=1e-6), key
    moved = 0.0
    for name, tensor in fsdp.named_weights():
        for rank in ranks:
            torch.testing.assert_close(rank["updated"][name], tensor, atol=2e-6, rtol=0, msg=name)
        moved = max(moved, float((tensor - ranks[0]["before"][name]).abs().max()))
    assert moved > 100 * 2e-6


@pytest.mark.parametrize("run", sorted(RUNS))
def test_moe_checkpoint_round_trip_restores_weights_and_optimizer(run: str, runs: dict[str, Any]) -> None:
    result = runs["ranks"][0][run]
    for name, tensor in result["updated"].items():  # saved after the first update
        assert torch.equal(result["restored"][name], tensor), name
        assert torch.equal(result["again"][name], result["second"][name]), name
