"""The Megatron engine on CPU against the Hugging Face models it was loaded from.

Two spawned gloo ranks build `MegatronEngine`s from tiny checkpoints on disk, each rank given its own slice of one
batch as the trainer scatters it: Qwen2 (tied embeddings, q/k/v biases) at TP 1 (so data parallel 2) and at
pipeline parallel 2, Llama (untied head) at TP 2, plus a critic at TP 2. Log-probs, entropy and values must equal
the Hugging Face models' (fp32, temperature applied); one shared update (`engines.update`) must land on the weights
the FSDP engine reaches from the same weights and batch on one rank; `named_weights` must give back the
checkpoint's names, shapes and values; a checkpoint round trip must restore weights and optimizer exactly (the
next update lands on the same weights); `save_hf` must write a loadable model.

megatron-core asks CUDA for devices, RNG states and tensor types, none of which can exist on this machine. Inside
the spawned workers only (never in the pytest process), `cuda_as_cpu` answers those calls as a GPU would:
`torch.cuda.current_device()` gives "cpu" and `synchronize()` returns; tensors requested on a CUDA device
(`device="cuda"`, `.cuda()`) are made on the CPU; `Tensor.type()` reports the CUDA type name that megatron's
(distributed) optimizer asserts; the RNG tracker's `fork` does nothing (dropout is 0, so it has nothing to seed);
the MoE all-to-all dispatcher's side stream is a stream that never waits, and its device-to-host copy of the split
sizes gives the numpy arrays it gives on a GPU (on the CPU megatron skips the copy and keeps tensors).
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
# name -> (tensor parallel, pipeline parallel, family), each on 2 ranks
RUNS = {"tp1": (1, 1, "qwen2"), "tp2": (2, 1, "llama"), "pp2": (1, 2, "qwen2")}


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
    """4 samples: prompts left-padded to 5, responses right-padded to 4 (verl's layout)."""
    g = torch.Generator().manual_seed(0)
    prompt_lengths, response_lengths = [5, 3, 4, 2], [4, 2, 3, 1]
    ids = torch.zeros(4, 9, dtype=torch.long)
    keep = torch.zeros(4, 9, dtype=torch.long)
    for i, (p, r) in enumerate(zip(prompt_lengths, response_lengths, strict=True)):
        ids[i, 5 - p:5 + r] = torch.randint(3, 270, (p + r,), generator=g)
        keep[i, 5 - p:5 + r] = 1
    positions = (keep.cumsum(-1) - 1).clamp(min=0)
    return TokenBatch(input_ids=ids, attention_mask=keep, position_ids=positions, responses=ids[:, 5:],
                      response_mask=keep[:, 5:].float())


def make_config(model: Path, tp: int, pp: int = 1, ep: int = 1, etp: int | None = None) -> Any:
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
                                   "expert_model_parallel_size": ep, "expert_tensor_parallel_size": etp,
                                   "sequence_parallel": True,
                                   "use_distributed_optimizer": True}}}}))


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
    batch.advantages = torch.tensor([[1.0], [-1.0]]).repeat(len(batch) // 2, 4)
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


def _worker(rank: int, world: int, port: int, out_dir: str, models: dict[str, str]) -> None:
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    import torch.distributed as dist
    from megatron.core import parallel_state

    from rlc_runtime.engines.megatron import MegatronEngine

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", world_size=world, rank=rank)
    results: dict[str, Any] = {}
    with cuda_as_cpu():
        for name, (tp, pp, _) in RUNS.items():
            cfg = make_config(Path(models[name]), tp, pp)
            engine = MegatronEngine(cfg, role="actor", device="cpu")
            results[name] = _actor_run(engine, make_batch().chunk(world)[rank], Path(out_dir) / f"ckpt_{name}", cfg)
            engine.save_hf(Path(out_dir) / f"hf_{name}")
            if name == "tp2":  # the critic shares the actor's parallel state, as on a real rank
                results["vocab_parallel"] = _vocab_parallel_grads(rank)
                critic_cfg = make_config(Path(models[name]), tp)
                critic = MegatronEngine(critic_cfg, role="critic", device="cpu")
                results["critic"] = _critic_run(critic, make_batch().chunk(world)[rank], critic_cfg)
            parallel_state.destroy_model_parallel()
    torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.barrier()  # a rank that leaves while gloo still talks to it aborts (SIGABRT)
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("megatron_engine")
    models = {name: str(write_model(family, out)) for name, (*_, family) in RUNS.items()}
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

    tp, pp, _ = RUNS[run]
    cfg = make_config(Path(runs["models"][run]), tp, pp)
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


def test_critic_values_equal_hugging_face_value_model_and_update_moves_them(runs: dict[str, Any]) -> None:
    from rlc_runtime.models import load_causal_lm

    _, _, family = RUNS["tp2"]
    model_cfg = make_config(Path(runs["models"]["tp2"]), 2).actor_rollout_ref.model
    with torch.random.fork_rng(devices=[]):  # the engine initialises the new value head from the megatron seed
        torch.manual_seed(42)
        critic = load_causal_lm(model_cfg, torch.float32, for_critic=True).eval()
    batch = make_batch()
    with torch.no_grad():
        want = critic(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                      position_ids=batch.position_ids).logits[:, batch.prompt_length - 1:-1, 0]
    mask = batch.response_mask.bool()
    results = [r["critic"] for r in runs["ranks"]]
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
