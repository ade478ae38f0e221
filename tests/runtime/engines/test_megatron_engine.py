"""The Megatron engine on CPU against the Hugging Face models it was loaded from.

Two spawned gloo ranks build `MegatronEngine`s from tiny checkpoints on disk, each rank given its own slice of one
batch as the trainer scatters it: Qwen2 (tied embeddings, q/k/v biases) at TP 1 (so data parallel 2), at
pipeline parallel 2 and at context parallel 2, Llama (untied head) at TP 2 and at context parallel 2, plus a critic
at TP 2 and at context parallel 2. Log-probs, entropy and values must equal the Hugging Face models' (fp32,
temperature applied); one shared update (`engines.update`) must land on the weights the FSDP engine reaches from
the same weights and batch on one rank (and context parallel 2 where data parallel 2 does); `named_weights` must
give back the checkpoint's names, shapes and values; a checkpoint round trip must restore weights and optimizer
exactly (the next update lands on the same weights); `save_hf` must write a loadable model. The tp1 run is
repeated with every offload on (`megatron.param_offload`, `grad_offload`, `optimizer_offload`, and the reference's
`param_offload`) and must give the same bits; a pipeline-parallel engine started from the tp1 run's checkpoint
(`use_dist_checkpointing`) must hold its weights.

Context parallelism (`megatron_cp`): the batch's length 15 is padded to 16 and cut in 4 chunks, rank 0 holding
chunks 0 and 3 and rank 1 chunks 1 and 2, so both ranks predict response tokens, rank 0 from both of its chunks.
The core attention is also checked alone at context parallel 2: its outputs and the gradients of its queries, keys
and values (those of keys and values come back through the all-gather's reduce-scatter) must equal attention
written out over the whole sequence, with autograd.

megatron-core asks CUDA for devices, RNG states and tensor types, none of which can exist on this machine. Inside
the spawned workers only (never in the pytest process), `cuda_as_cpu` answers those calls as a GPU would:
`torch.cuda.current_device()` gives "cpu" and `synchronize()` returns; tensors requested on a CUDA device
(`device="cuda"`, `.cuda()`) are made on the CPU, and pinned memory (page-locked, for copies to a GPU) is ordinary
CPU memory; `Tensor.type()` reports the CUDA type name that megatron's (distributed) optimizer asserts; the RNG
tracker's `fork` does nothing (dropout is 0, so it has nothing to seed); the MoE all-to-all dispatcher's side
stream is a stream that never waits, and its device-to-host copy of the split sizes gives the numpy arrays it gives
on a GPU (on the CPU megatron skips the copy and keeps tensors).
Everything else is megatron-core as shipped: DDP, the distributed optimizer, the schedules, dist_checkpointing.
Gradient checkpointing is off here (megatron's recompute saves CUDA RNG states); `bench/megatron_gpu.py` runs it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.overrides import TorchFunctionMode
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from rlc.config.defaults import fill_defaults
from rlc.config.root import RLCConfig
from rlc_runtime.algorithms.losses import entropy_from_logits, log_probs_from_logits
from rlc_runtime.batch import TokenBatch

ROOT = Path(__file__).parents[3]
TOKENIZER = ROOT / "examples" / "models" / "tiny-qwen2"
TEMPERATURE = 0.7
SMALL = dict(vocab_size=270, hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2,
             num_key_value_heads=2, head_dim=64, rms_norm_eps=1e-6, max_position_embeddings=256)
PROMPT, RESPONSE = 4, 11
# name -> (tensor parallel, pipeline parallel, family, context parallel), each on 2 ranks
RUNS = {"tp1": (1, 1, "qwen2", 1), "tp2": (2, 1, "llama", 1), "pp2": (1, 2, "qwen2", 1), "cp2": (1, 1, "qwen2", 2),
        "cp2_llama": (1, 1, "llama", 2)}
CRITIC_RUNS = ("tp2", "cp2_llama")  # a critic shares the actor's parallel state, as on a real rank
# the attention check: sequence, batch, query heads, key/value heads (grouped-query), head size
S, B, HEADS, GROUPS, D = 12, 2, 4, 2, 8


def write_model(family: str, directory: Path) -> Path:
    torch.manual_seed(len(family))
    if family == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(**SMALL, tie_word_embeddings=True, rope_theta=1e6))
    else:
        model = LlamaForCausalLM(LlamaConfig(**SMALL, tie_word_embeddings=False))
    with torch.no_grad():  # random everywhere, so a misplaced block cannot pass
        for name, p in model.named_parameters():
            p.copy_(torch.randn_like(p) * 0.05 + ("norm" in name))
    path = directory / family
    if path.exists():
        return path
    model.save_pretrained(path)
    for f in TOKENIZER.glob("tokenizer*"):
        shutil.copy(f, path)
    return path


def make_batch() -> TokenBatch:
    """4 samples: prompts left-padded to 4, responses right-padded to 11 (verl's layout)."""
    g = torch.Generator().manual_seed(0)
    prompt_lengths, response_lengths = [4, 2, 3, 1], [11, 9, 6, 2]
    ids = torch.zeros(4, PROMPT + RESPONSE, dtype=torch.long)
    keep = torch.zeros_like(ids)
    for i, (p, r) in enumerate(zip(prompt_lengths, response_lengths, strict=True)):
        ids[i, PROMPT - p:PROMPT + r] = torch.randint(3, 270, (p + r,), generator=g)
        keep[i, PROMPT - p:PROMPT + r] = 1
    positions = (keep.cumsum(-1) - 1).clamp(min=0)
    return TokenBatch(input_ids=ids, attention_mask=keep, position_ids=positions, responses=ids[:, PROMPT:],
                      response_mask=keep[:, PROMPT:].float())


def make_config(model: Path, tp: int, pp: int = 1, cp: int = 1, ep: int = 1, etp: int | None = None,
                megatron: dict[str, Any] | None = None, ref_megatron: dict[str, Any] | None = None) -> Any:
    return fill_defaults(RLCConfig.model_validate({
        "backend": "megatron",
        "data": {"train_files": "unused.jsonl", "train_batch_size": 2},
        "critic": {"model": {"enable_gradient_checkpointing": False}, "optim": {"lr": 1e-2}},
        "actor_rollout_ref": {
            "model": {"path": str(model), "enable_gradient_checkpointing": False},
            "rollout": {"n": 2, "temperature": TEMPERATURE},
            "actor": {"ppo_mini_batch_size": 2, "ppo_micro_batch_size_per_gpu": 1, "use_kl_loss": True,
                      # Adam's eps of 1 makes its first step follow the gradient's size, not only its sign
                      "optim": {"lr": 1e-2, "weight_decay": 0.0, "override_optimizer_config": {"eps": 1.0}},
                      "megatron": {"tensor_model_parallel_size": tp, "pipeline_model_parallel_size": pp,
                                   "context_parallel_size": cp, "expert_model_parallel_size": ep,
                                   "expert_tensor_parallel_size": etp, "sequence_parallel": True,
                                   "use_distributed_optimizer": True, **(megatron or {})}},
            "ref": {"megatron": {"tensor_model_parallel_size": tp, "pipeline_model_parallel_size": pp,
                                 "context_parallel_size": cp, "expert_model_parallel_size": ep,
                                 "expert_tensor_parallel_size": etp, **(ref_megatron or {})}}}}))


# --- in the spawned workers -----------------------------------------------------------------------------------


def _is_cuda(device: Any) -> bool:
    return isinstance(device, int) or (device is not None and str(device).startswith("cuda"))


class _CudaAsCpu(TorchFunctionMode):
    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = dict(kwargs or {})
        if func is torch.Tensor.cuda:
            return args[0]
        if func is torch.Tensor.type and len(args) == 1 and not kwargs:  # megatron asserts CUDA type names
            return func(*args).replace("torch.", "torch.cuda.", 1)
        if _is_cuda(kwargs.get("device")):
            kwargs["device"] = "cpu"
        if kwargs.get("pin_memory"):  # megatron's rotary embedding under context parallelism
            kwargs["pin_memory"] = False
        return func(*args, **kwargs)


class _Stream:
    """A CUDA stream on the CPU: work is never queued, so nothing waits."""

    def wait_stream(self, other: Any) -> None:
        pass

    def record_event(self, *args: Any) -> _Stream:
        return self

    def synchronize(self) -> None:
        pass


def _to_host(tensor: Any, as_numpy: bool = False, record_stream: bool = False) -> Any:
    return tensor.numpy() if torch.is_tensor(tensor) and as_numpy else tensor


@contextlib.contextmanager
def cuda_as_cpu():
    """See the module docstring: megatron-core's CUDA requests, answered on the CPU."""
    from megatron.core import tensor_parallel
    from megatron.core.transformer.moe import token_dispatcher

    class NoRngTracker:
        def fork(self, *args: Any, **kwargs: Any) -> contextlib.AbstractContextManager:
            return contextlib.nullcontext()

    stream = _Stream()
    saved = (torch.cuda.current_device, torch.cuda.synchronize, tensor_parallel.get_cuda_rng_tracker,
             torch.cuda.Stream, torch.cuda.current_stream, torch.cuda.stream, token_dispatcher.maybe_move_tensor_to_cpu)
    torch.cuda.current_device, torch.cuda.synchronize = (lambda: "cpu"), (lambda *args: None)
    tensor_parallel.get_cuda_rng_tracker = NoRngTracker
    torch.cuda.Stream, torch.cuda.current_stream = (lambda *args, **kwargs: _Stream()), (lambda *args: stream)
    torch.cuda.stream = lambda _: contextlib.nullcontext()
    token_dispatcher.maybe_move_tensor_to_cpu = _to_host
    try:
        with _CudaAsCpu():
            yield
    finally:
        (torch.cuda.current_device, torch.cuda.synchronize, tensor_parallel.get_cuda_rng_tracker, torch.cuda.Stream,
         torch.cuda.current_stream, torch.cuda.stream, token_dispatcher.maybe_move_tensor_to_cpu) = saved


def _weights(engine: Any) -> dict[str, torch.Tensor]:
    return {name: t.clone() for name, t in engine.named_weights()}


def with_policy_targets(batch: TokenBatch, log_probs: torch.Tensor) -> TokenBatch:
    """Old log-probs slightly off the current ones (so some ratios clip), a reference below them, and
    advantages of both signs."""
    g = torch.Generator().manual_seed(len(batch))
    batch.old_log_probs = log_probs + 0.3 * torch.randn(log_probs.shape, generator=g)
    batch.ref_log_probs = log_probs - 0.1
    batch.advantages = torch.tensor([[1.0], [-1.0]]).repeat(len(batch) // 2, RESPONSE)
    return batch


def _actor_run(engine: Any, mine: TokenBatch, checkpoint: Path, cfg: Any) -> dict[str, Any]:
    from rlc_runtime.engines.update import compute_log_probs, compute_outputs, policy_update

    update = policy_update(engine, cfg)
    log_probs, entropy = compute_log_probs(engine, mine, micro_batch_size=1, with_entropy=True)
    sum_pi_squared = compute_outputs(engine, mine, 1, ("sum_pi_squared",))["sum_pi_squared"]
    before = _weights(engine)
    mine = with_policy_targets(mine, log_probs)
    metrics = update(mine)
    targets = {k: getattr(mine, k) for k in ("old_log_probs", "ref_log_probs", "advantages")}
    updated = _weights(engine)
    engine.save_checkpoint(checkpoint, update.state_dict())  # after a step, as the trainer saves
    update(mine)
    second = _weights(engine)
    update.load_state_dict(engine.load_checkpoint(checkpoint))
    restored = _weights(engine)
    update(mine)
    return {"log_probs": log_probs, "entropy": entropy, "sum_pi_squared": sum_pi_squared, "before": before,
            "updated": updated, "second": second, "restored": restored, "again": _weights(engine),
            "metrics": metrics, "targets": targets}


def _critic_run(engine: Any, mine: TokenBatch, cfg: Any) -> dict[str, Any]:
    from rlc_runtime.engines.update import compute_values, critic_update

    values = compute_values(engine, mine, micro_batch_size=2)
    mine.values, mine.returns = values, values + 1.0
    metrics = critic_update(engine, cfg)(mine)
    return {"values": values, "after": compute_values(engine, mine, micro_batch_size=2), "metrics": metrics,
            "names": {name: tuple(t.shape) for name, t in engine.named_weights()}}


def vocab_parallel_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return torch.randn(3, 5, 64, generator=g) * 3, torch.randint(0, 64, (3, 5), generator=g)


def _vocab_parallel_grads(rank: int) -> dict[str, torch.Tensor]:
    """Entropy and log-probs and their gradients from this rank's half of the vocabulary (TP 2)."""
    from rlc_runtime.engines.megatron_loss import (
        vocab_parallel_entropy,
        vocab_parallel_log_probs,
        vocab_parallel_sum_pi_squared,
    )

    logits, labels = vocab_parallel_inputs()
    out = {"sum_pi_squared": vocab_parallel_sum_pi_squared(logits.chunk(2, dim=-1)[rank].clone())}
    for name, fn in (("entropy", vocab_parallel_entropy),
                     ("log_probs", lambda x: vocab_parallel_log_probs(x.clone(), labels))):
        local = logits.chunk(2, dim=-1)[rank].clone().requires_grad_()
        value = fn(local)
        (value * torch.linspace(0.5, 1.5, value.numel()).view_as(value)).sum().backward()
        out[name], out[f"{name}_grad"] = value.detach(), local.grad
    return out


OFFLOAD = {"param_offload": True, "grad_offload": True, "optimizer_offload": True}


def _released(engine: Any) -> dict[str, bool]:
    """Whether each kind of state has no storage now (released by the offload), and its host copies."""
    params = list(engine.module.parameters())
    moments = [v for opt in engine.optimizer.chained_optimizers for state in opt.optimizer.state.values()
               for k, v in state.items() if k != "step"]
    return {"params": all(p.untyped_storage().nbytes() == 0 for p in params),
            "grads": all(b.grad_data.untyped_storage().nbytes() == 0 for b in engine.model.buffers),
            "moments": bool(moments) and all(v.untyped_storage().nbytes() == 0 for v in moments),
            "host_bytes": sum(h.numel() for hosts in engine.offloader.hosts.values() for h in hosts)}


def _moments(engine: Any) -> list[torch.Tensor]:
    with engine.resident(training=True):
        return [v.clone() for opt in engine.optimizer.chained_optimizers for state in opt.optimizer.state.values()
                for k, v in state.items() if k != "step"]


def _offload_run(model: Path, mine: TokenBatch, out_dir: Path) -> dict[str, Any]:
    """The tp1 run again with every offload on, the state checked between its phases; and a reference with
    param_offload."""
    from rlc_runtime.engines.megatron import MegatronEngine

    cfg = make_config(model, 1, megatron=OFFLOAD, ref_megatron={"param_offload": True})
    engine = MegatronEngine(cfg, role="actor", device="cpu")
    states = {"built": _released(engine)}
    with engine.resident(training=True):
        states["resident"] = _released(engine)
    result = _actor_run(engine, mine, out_dir / "ckpt_offload", cfg)
    states["after"] = _released(engine)
    result["moments"] = _moments(engine)
    states["after_moments"] = _released(engine)
    ref = MegatronEngine(cfg, role="ref", device="cpu")
    from rlc_runtime.engines.update import compute_log_probs

    states["ref_built"] = all(p.untyped_storage().nbytes() == 0 for p in ref.module.parameters())
    result["ref_log_probs"] = compute_log_probs(ref, mine, micro_batch_size=1)[0]
    states["ref_after"] = all(p.untyped_storage().nbytes() == 0 for p in ref.module.parameters())
    return result | {"states": states}


def _offload_without_distributed_optimizer(model: Path, mine: TokenBatch) -> dict[str, Any]:
    """Every offload on, with megatron's plain optimizer: parameters own their storage (no DDP parameter buffer)
    and the fp32 optimizer steps them in place."""
    from rlc_runtime.engines.megatron import MegatronEngine
    from rlc_runtime.engines.update import compute_log_probs, policy_update

    cfg = make_config(model, 1, megatron={**OFFLOAD, "use_distributed_optimizer": False})
    engine = MegatronEngine(cfg, role="actor", device="cpu")
    mine = with_policy_targets(mine, compute_log_probs(engine, mine, micro_batch_size=1)[0])
    policy_update(engine, cfg)(mine)
    return {"released": _released(engine), "updated": _weights(engine)}


def _from_dist_checkpoint(model: Path, tp: int, pp: int, checkpoint: Path) -> dict[str, torch.Tensor]:
    from rlc_runtime.engines.megatron import MegatronEngine

    cfg = make_config(model, tp, pp, megatron={"use_dist_checkpointing": True,
                                              "dist_checkpointing_path": str(checkpoint)})
    return _weights(MegatronEngine(cfg, role="actor", device="cpu"))


def attention_inputs() -> tuple[torch.Tensor, ...]:
    """q [S, B, HEADS, D], k and v [S, B, GROUPS, D], the padding mask [B, S] (the second row right-padded), and
    weights [S, B, HEADS x D] of a loss."""
    g = torch.Generator().manual_seed(5)
    q, k, v = (torch.randn(S, B, n, D, generator=g) for n in (HEADS, GROUPS, GROUPS))
    keep = torch.ones(B, S, dtype=torch.long)
    keep[1, 9:] = 0
    return q, k, v, keep, torch.randn(S, B, HEADS * D, generator=g)


def _cp_attention_run(rank: int) -> dict[str, Any]:
    """The context-parallel core attention at CP 2 on this rank's chunks, and its gradients."""
    from megatron.core import parallel_state
    from megatron.core.transformer import TransformerConfig
    from megatron.core.transformer.enums import AttnMaskType

    from rlc_runtime.engines.megatron_cp import ContextParallelAttention, attention_mask, cp_positions

    parallel_state.initialize_model_parallel(context_parallel_size=2)
    config = TransformerConfig(num_layers=1, hidden_size=HEADS * D, num_attention_heads=HEADS,
                               num_query_groups=GROUPS, kv_channels=D, context_parallel_size=2,
                               attention_softmax_in_fp32=True, attention_dropout=0.0, use_cpu_initialization=True)
    attention = ContextParallelAttention(config, 1, AttnMaskType.causal, "self")
    q, k, v, keep, weights = attention_inputs()
    mine = cp_positions(S, 2, rank)
    local = [t[mine].clone().requires_grad_() for t in (q, k, v)]
    out = attention(*local, attention_mask(keep, 2, rank))
    (out * weights[mine]).sum().backward()
    parallel_state.destroy_model_parallel()
    return {"out": out.detach(), "grads": [t.grad for t in local]}


def _worker(rank: int, world: int, port: int, out_dir: str, models: dict[str, str]) -> None:
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    import torch.distributed as dist
    from megatron.core import parallel_state

    from rlc_runtime.engines.megatron import MegatronEngine

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", world_size=world, rank=rank)
    results: dict[str, Any] = {}
    with cuda_as_cpu():
        results["cp_attention"] = _cp_attention_run(rank)
        for name, (tp, pp, _, cp) in RUNS.items():
            cfg = make_config(Path(models[name]), tp, pp, cp)
            engine = MegatronEngine(cfg, role="actor", device="cpu")
            results[name] = _actor_run(engine, make_batch().chunk(world)[rank], Path(out_dir) / f"ckpt_{name}", cfg)
            engine.save_hf(Path(out_dir) / f"hf_{name}")
            if name == "tp1":
                results[name]["moments"] = _moments(engine)
                results["offload"] = _offload_run(Path(models[name]), make_batch().chunk(world)[rank], Path(out_dir))
                results["offload_plain_optimizer"] = _offload_without_distributed_optimizer(
                    Path(models[name]), make_batch().chunk(world)[rank])
            if name == "pp2":  # the tp1 run's checkpoint (same architecture), resharded to pipeline stages
                results["from_dist"] = _from_dist_checkpoint(Path(models[name]), tp, pp, Path(out_dir) / "ckpt_tp1")
            if name == "tp2":
                results["vocab_parallel"] = _vocab_parallel_grads(rank)
            if name in CRITIC_RUNS:
                critic = MegatronEngine(cfg, role="critic", device="cpu")
                results[f"critic_{name}"] = _critic_run(critic, make_batch().chunk(world)[rank], cfg)
            parallel_state.destroy_model_parallel()
    torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.barrier()  # a rank that leaves while gloo still talks to it aborts (SIGABRT)
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("megatron_engine")
    models = {name: str(write_model(family, out)) for name, (_, _, family, _) in RUNS.items()}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.multiprocessing.spawn(_worker, args=(2, port, str(out), models), nprocs=2, join=True)
    return {"ranks": [torch.load(out / f"rank{r}.pt") for r in range(2)], "models": models, "out": out}


# --- checks ---------------------------------------------------------------------------------------------------


def hf_reference(model_dir: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """What the FSDP engine computes: logits / temperature at the response positions."""
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    batch = make_batch()
    with torch.no_grad():
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                       position_ids=batch.position_ids).logits
    logits = logits[:, batch.prompt_length - 1:-1] / TEMPERATURE
    state = model.state_dict()
    if model.config.tie_word_embeddings:
        state.pop("lm_head.weight")
    return (log_probs_from_logits(logits, batch.responses), entropy_from_logits(logits),
            (torch.softmax(logits, -1) ** 2).sum(-1), state)


@pytest.mark.parametrize("run", sorted(RUNS))
def test_log_probs_and_entropy_equal_hugging_face(run: str, runs: dict[str, Any]) -> None:
    want_lp, want_entropy, want_sum_pi_squared, _ = hf_reference(runs["models"][run])
    mask = make_batch().response_mask.bool()
    got_lp = torch.cat([r[run]["log_probs"] for r in runs["ranks"]])  # each rank returns its own slice
    got_entropy = torch.cat([r[run]["entropy"] for r in runs["ranks"]])
    got_sum_pi_squared = torch.cat([r[run]["sum_pi_squared"] for r in runs["ranks"]])
    torch.testing.assert_close(got_sum_pi_squared[mask], want_sum_pi_squared[mask], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(got_lp[mask], want_lp[mask], atol=1e-4, rtol=0)
    torch.testing.assert_close(got_entropy[mask], want_entropy[mask], atol=1e-4, rtol=0)


@pytest.mark.parametrize("run", sorted(RUNS))
def test_named_weights_are_the_checkpoint_under_hugging_face_names(run: str, runs: dict[str, Any]) -> None:
    *_, want = hf_reference(runs["models"][run])
    for rank in runs["ranks"]:  # every rank gathers the full tensors
        got = rank[run]["before"]
        assert list(got) == list(want)
        for name, tensor in want.items():
            assert torch.equal(got[name], tensor), name


@pytest.mark.parametrize("run", sorted(RUNS))
def test_update_lands_where_the_fsdp_engine_does_from_the_same_weights_and_batch(run: str,
                                                                                  runs: dict[str, Any]) -> None:
    from rlc_runtime.engines.fsdp import FSDPEngine
    from rlc_runtime.engines.update import policy_update

    tp, pp, _, cp = RUNS[run]
    cfg = make_config(Path(runs["models"][run]), tp, pp, cp)
    fsdp = FSDPEngine(cfg, "actor", "cpu")  # one rank, the whole batch: the reference
    ranks = [r[run] for r in runs["ranks"]]
    batch = make_batch()
    batch.old_log_probs, batch.ref_log_probs, batch.advantages = (
        torch.cat([r["targets"][k] for r in ranks]) for k in ("old_log_probs", "ref_log_probs", "advantages"))
    want = policy_update(fsdp, cfg)(batch)
    got = ranks[0]["metrics"]
    for key in ("actor/pg_loss", "actor/kl_loss", "actor/entropy", "actor/pg_clipfrac", "actor/ppo_kl",
                "actor/grad_norm", "actor/lr"):
        assert got[key] == pytest.approx(want[key], rel=1e-4, abs=1e-6), key
    assert got["actor/pg_clipfrac"] > 0 and got["actor/lr"] == 1e-2
    moved = 0.0
    for name, tensor in fsdp.named_weights():
        for rank in ranks:  # every rank gathers the same full tensors
            torch.testing.assert_close(rank["updated"][name], tensor, atol=2e-6, rtol=0)
        moved = max(moved, float((tensor - ranks[0]["before"][name]).abs().max()))
    assert moved > 100 * 2e-6  # the tolerance is far below the step


@pytest.mark.parametrize("run", sorted(RUNS))
def test_checkpoint_round_trip_restores_weights_and_optimizer(run: str, runs: dict[str, Any]) -> None:
    result = runs["ranks"][0][run]
    assert any(not torch.equal(t, result["updated"][n]) for n, t in result["second"].items())
    for name, tensor in result["updated"].items():  # saved after the first update
        assert torch.equal(result["restored"][name], tensor), name
        assert torch.equal(result["again"][name], result["second"][name]), name


def test_save_hf_writes_a_loadable_model_with_its_tokenizer(runs: dict[str, Any]) -> None:
    from transformers import AutoTokenizer

    for run in RUNS:
        directory = runs["out"] / f"hf_{run}"
        model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32)
        got = model.state_dict()
        want = runs["ranks"][0][run]["again"]
        for name, tensor in want.items():
            assert torch.equal(got[name], tensor), name
        text = "3+4=7, 12+30=42"
        assert AutoTokenizer.from_pretrained(directory)(text)["input_ids"] == \
            AutoTokenizer.from_pretrained(runs["models"][run])(text)["input_ids"]  # the checkpoint's tokenizer


@pytest.mark.parametrize("run", CRITIC_RUNS)
def test_critic_values_equal_hugging_face_value_model_and_update_moves_them(run: str, runs: dict[str, Any]) -> None:
    from rlc_runtime.models import load_causal_lm

    model_cfg = make_config(Path(runs["models"][run]), 1).actor_rollout_ref.model
    with torch.random.fork_rng(devices=[]):  # the engine initialises the new value head from the megatron seed
        torch.manual_seed(42)
        critic = load_causal_lm(model_cfg, torch.float32, for_critic=True).eval()
    batch = make_batch()
    with torch.no_grad():
        want = critic(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                      position_ids=batch.position_ids).logits[:, batch.prompt_length - 1:-1, 0]
    mask = batch.response_mask.bool()
    results = [r[f"critic_{run}"] for r in runs["ranks"]]
    torch.testing.assert_close(torch.cat([r["values"] for r in results])[mask], want[mask], atol=1e-4, rtol=0)
    moved = torch.cat([r["after"] - r["values"] for r in results])[mask]
    assert (moved > 0).float().mean() > 0.5  # returns are values + 1: one step moves most values up
    assert results[0]["metrics"]["critic/vf_loss"] == pytest.approx(0.5, rel=1e-4)
    assert results[0]["names"] == {name: tuple(t.shape) for name, t in critic.state_dict().items()}


def test_vocab_parallel_entropy_and_log_probs_match_full_vocabulary_values_and_gradients(runs: dict[str, Any]) -> None:
    logits, labels = vocab_parallel_inputs()
    weights = torch.linspace(0.5, 1.5, labels.numel()).view_as(labels)
    for name, fn in (("entropy", entropy_from_logits), ("log_probs", lambda x: log_probs_from_logits(x, labels))):
        full = logits.clone().requires_grad_()
        value = fn(full)
        (value * weights).sum().backward()
        got = [r["vocab_parallel"] for r in runs["ranks"]]
        for rank in range(2):  # the same value on both ranks; each holds the gradient of its own half
            torch.testing.assert_close(got[rank][name], value.detach(), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(torch.cat([g[f"{name}_grad"] for g in got], dim=-1), full.grad, atol=1e-5,
                                   rtol=1e-5)
    for rank in range(2):
        torch.testing.assert_close(runs["ranks"][rank]["vocab_parallel"]["sum_pi_squared"],
                                   (torch.softmax(logits, -1) ** 2).sum(-1), atol=1e-6, rtol=1e-5)


def written_out_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Causal attention over the whole sequence with padding keys masked, grouped-query: [S, B, HEADS x D]."""
    k, v = (t.repeat_interleave(HEADS // GROUPS, dim=2) for t in (k, v))
    scores = torch.einsum("qbhd,kbhd->bhqk", q, k) / D**0.5
    hidden = torch.ones(S, S, dtype=torch.bool).triu(1) | ~keep.bool()[:, None, None, :]
    probs = torch.softmax(scores.masked_fill(hidden, float("-inf")), dim=-1)
    return torch.einsum("bhqk,kbhd->qbhd", probs, v).reshape(S, B, HEADS * D)


def test_context_parallel_attention_equals_whole_sequence_attention_and_its_gradients(runs: dict[str, Any]) -> None:
    q, k, v, keep, weights = attention_inputs()
    full = [t.clone().requires_grad_() for t in (q, k, v)]
    out = written_out_attention(*full, keep)
    (out * weights).sum().backward()
    for rank, mine in enumerate(([0, 1, 2, 9, 10, 11], [3, 4, 5, 6, 7, 8])):  # chunks r and 3 - r of 4
        result = runs["ranks"][rank]["cp_attention"]
        torch.testing.assert_close(result["out"], out.detach()[mine], atol=1e-5, rtol=1e-5)
        for got, want in zip(result["grads"], full, strict=True):
            torch.testing.assert_close(got, want.grad[mine], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("cp2", "cp1"), [("cp2", "tp1"), ("cp2_llama", "tp2")])
def test_context_parallel_2_computes_and_updates_as_context_parallel_1(cp2: str, cp1: str,
                                                                       runs: dict[str, Any]) -> None:
    """The same weights and batch at context parallel 2 and 1 (Qwen2: data parallel 2; Llama: tensor parallel 2):
    the same log-probs, entropy, metrics and updated weights."""
    ranks = runs["ranks"]
    for key in ("log_probs", "entropy"):
        torch.testing.assert_close(torch.cat([r[cp2][key] for r in ranks]), torch.cat([r[cp1][key] for r in ranks]),
                                   atol=1e-5, rtol=0)
    for key in ("actor/pg_loss", "actor/kl_loss", "actor/entropy", "actor/pg_clipfrac", "actor/grad_norm"):
        assert ranks[0][cp2]["metrics"][key] == pytest.approx(ranks[0][cp1]["metrics"][key], rel=1e-4, abs=1e-6)
    moved = 0.0
    for name, tensor in ranks[0][cp1]["updated"].items():
        torch.testing.assert_close(ranks[0][cp2]["updated"][name], tensor, atol=2e-6, rtol=0)
        moved = max(moved, float((tensor - ranks[0][cp1]["before"][name]).abs().max()))
    assert moved > 100 * 2e-6  # the tolerance is far below the step


def test_offloaded_update_lands_on_exactly_the_weights_and_optimizer_state_of_the_plain_one(
        runs: dict[str, Any]) -> None:
    """The tp1 run with every offload on (and the reference with param_offload) against the same run without:
    the same bits everywhere, since the offload moves bytes and changes no arithmetic."""
    for rank in runs["ranks"]:
        plain, offloaded = rank["tp1"], rank["offload"]
        for key in ("log_probs", "entropy", "sum_pi_squared"):
            assert torch.equal(offloaded[key], plain[key]), key
        for key in ("before", "updated", "second", "restored", "again"):
            assert list(offloaded[key]) == list(plain[key])
            for name, tensor in plain[key].items():
                assert torch.equal(offloaded[key][name], tensor), (key, name)
        assert offloaded["metrics"] == plain["metrics"]
        assert len(offloaded["moments"]) == len(plain["moments"]) > 0
        for got, want in zip(offloaded["moments"], plain["moments"], strict=True):
            assert torch.equal(got, want)
        assert torch.equal(offloaded["ref_log_probs"], plain["log_probs"])  # the reference is the initial policy


def test_offload_without_the_distributed_optimizer_lands_where_the_distributed_one_does(
        runs: dict[str, Any]) -> None:
    """The other storage layout (each parameter its own tensor, megatron's plain optimizer): released after the
    update, and its weights those of the tp1 run's first update (another optimizer: equal to rounding)."""
    for rank in runs["ranks"]:
        got = rank["offload_plain_optimizer"]
        assert got["released"]["params"] and got["released"]["grads"] and got["released"]["moments"]
        for name, tensor in rank["tp1"]["updated"].items():
            torch.testing.assert_close(got["updated"][name], tensor, atol=2e-6, rtol=0)


def test_offloaded_state_is_released_between_phases_and_kept_on_the_host(runs: dict[str, Any]) -> None:
    """What CPU can show: the device storage of parameters, gradient buffers and Adam moments is released (size 0)
    outside the phases and allocated inside them, and host copies of parameters and moments exist. That the GPU's
    memory drops is for `bench/megatron_offload_gpu.py`: here the "device" and the host are the same memory."""
    for rank in runs["ranks"]:
        states = rank["offload"]["states"]
        params = sum(t.numel() * 4 for t in rank["tp1"]["before"].values())  # fp32 on CPU, every rank holds all
        assert states["built"] == {"params": True, "grads": True, "moments": False, "host_bytes": states["built"][
            "host_bytes"]}  # no Adam state before the first step
        assert states["built"]["host_bytes"] >= params
        assert not states["resident"]["params"] and not states["resident"]["grads"]
        for when in ("after", "after_moments"):  # after the run, and after a phase that brought the state back
            assert states[when]["params"] and states[when]["grads"] and states[when]["moments"], when
            # the weights, and Adam's two moments of this rank's half (the distributed optimizer over 2 ranks)
            assert states[when]["host_bytes"] >= params + 2 * params // 2, when
        assert states["ref_built"] and states["ref_after"]


def test_dist_checkpoint_gives_the_initial_weights_in_another_layout(runs: dict[str, Any]) -> None:
    """use_dist_checkpointing from the checkpoint the tp1 run saved after its first update (data parallel 2),
    loaded by a pipeline-parallel-2 engine: its weights are the saved ones, not model.path's."""
    for rank in runs["ranks"]:
        want, got = rank["tp1"]["updated"], rank["from_dist"]
        assert list(got) == list(want)
        for name, tensor in want.items():
            assert torch.equal(got[name], tensor), name
        assert any(not torch.equal(t, rank["tp1"]["before"][n]) for n, t in want.items())
