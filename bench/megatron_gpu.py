"""The Megatron backend on GPUs: logits against Hugging Face, TP 2 against TP 1, GRPO-style engine steps timed.

Run from the repo root on the GPU host, after installing the packed wheels (megatron-core, pydantic), with 1 or 2
GPUs:

    PYTHONPATH=/tmp/site:. torchrun --nproc_per_node=1 bench/megatron_gpu.py
    PYTHONPATH=/tmp/site:. torchrun --nproc_per_node=2 bench/megatron_gpu.py   # adds TP 2 == TP 1; engine at TP 2
    PYTHONPATH=/tmp/site:. torchrun --nproc_per_node=2 bench/megatron_gpu.py --context-parallel 2  # engine at CP 2

1. Logits of the megatron-core model equal the Hugging Face model's within bf16 tolerance, for a tiny Qwen2 and a
   random Qwen2-0.5B-shaped model: both run in bf16 and are compared with the Hugging Face fp32 logits; megatron's
   error must stay within twice Hugging Face's own bf16 error (and its argmax agree as often).
2. With 2 GPUs, tensor parallel 2 (vocabulary-parallel logits gathered) gives the TP 1 logits, by the same rule.
3. `MegatronEngine` (TP = number of GPUs / CP, distributed optimizer, bf16, gradient checkpointing) runs GRPO-style
   steps on synthetic batches: 8 prompts x 8 samples, ~128-token prompts, up to 256 new tokens, random rewards,
   a reference model and a KL loss, micro-batches of 16, one optimizer step per update. It prints tokens/s for
   the log-prob and update phases, the weight-gather time (what the vLLM sync costs) and peak memory, and checks
   the engine's log-probs against Hugging Face's and a distributed checkpoint round trip.

Nothing is downloaded: models are built from configs (the tokenizer, needed only by checkpoints, is the repo's
tiny one). Every check prints a PASS or FAIL line; the exit status is non-zero if any failed.

Path shim: the package `rlc_runtime` is the folder `runtime/` (pyproject maps it). When it is not installed, the
lines below register `runtime/` under that name, so a plain checkout runs with only the repo root on the path.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
if importlib.util.find_spec("rlc_runtime") is None:
    _spec = importlib.util.spec_from_file_location("rlc_runtime", ROOT / "runtime" / "__init__.py",
                                                   submodule_search_locations=[str(ROOT / "runtime")])
    sys.modules["rlc_runtime"] = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(sys.modules["rlc_runtime"])

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

QWEN2_05B = dict(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                 num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=4096, tie_word_embeddings=True,
                 rope_theta=1000000.0, rms_norm_eps=1e-6)
TINY_QWEN2 = dict(vocab_size=1000, hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=True, rms_norm_eps=1e-6)
PROMPTS, SAMPLES, PROMPT_LEN, RESPONSE_LEN, STEPS, MICRO = 8, 8, 128, 256, 4, 16
FAILED: list[str] = []


def rank() -> int:
    return dist.get_rank()


def say(text: str) -> None:
    if rank() == 0:
        print(text, flush=True)


def check(name: str, ok: bool, detail: str) -> None:
    say(f"{'PASS' if ok else 'FAIL'} {name}: {detail}")
    if not ok:
        FAILED.append(name)


def init_parallel(tp: int) -> None:
    from megatron.core import parallel_state, tensor_parallel

    if parallel_state.model_parallel_is_initialized():
        parallel_state.destroy_model_parallel()
    parallel_state.initialize_model_parallel(tensor_model_parallel_size=tp)
    tensor_parallel.model_parallel_cuda_manual_seed(1234)


# --- 1 and 2: logits ------------------------------------------------------------------------------------------


def hf_model(config_kwargs: dict) -> torch.nn.Module:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    return Qwen2ForCausalLM(Qwen2Config(**config_kwargs)).cuda().eval()


def megatron_logits(hf: torch.nn.Module, ids: torch.Tensor, tp: int) -> torch.Tensor:
    """Full-vocabulary bf16 logits of the megatron model at tensor parallel `tp` (slices gathered)."""
    from megatron.core import parallel_state

    from rlc_runtime.engines.megatron_convert import hf_to_megatron
    from rlc_runtime.engines.megatron_model import build_model, load_shard

    init_parallel(tp)
    model = build_model(hf.config, tp, 1, torch.bfloat16).cuda().eval()
    for param in model.parameters():  # as the engine does: megatron's torch norms are built fp32
        param.data = param.data.to(torch.bfloat16)
    state = {k: v.to(torch.bfloat16) for k, v in hf.state_dict().items()}
    load_shard(model, hf_to_megatron(state, hf.config, tp, parallel_state.get_tensor_model_parallel_rank()))
    causal = torch.ones(ids.shape[1], ids.shape[1], dtype=torch.bool, device="cuda").triu(1)[None, None]
    with torch.no_grad():
        local = model(ids, torch.arange(ids.shape[1], device="cuda").expand_as(ids), causal)
    if tp > 1:
        parts = [torch.empty_like(local) for _ in range(tp)]
        dist.all_gather(parts, local.contiguous(), group=parallel_state.get_tensor_model_parallel_group())
        local = torch.cat(parts, dim=-1)
    del model
    return local[..., :hf.config.vocab_size].float()


def compare(name: str, got: torch.Tensor, ref: torch.Tensor, hf_bf16: torch.Tensor) -> None:
    err, hf_err = (got - ref).abs(), (hf_bf16 - ref).abs()
    agree, hf_agree = [(x.argmax(-1) == ref.argmax(-1)).float().mean().item() for x in (got, hf_bf16)]
    ok = err.mean() <= 2 * hf_err.mean() + 1e-4 and err.max() <= 2 * hf_err.max() + 1e-3 and agree >= hf_agree - 0.01
    check(name, bool(ok), f"mean|err| {err.mean():.2e} (HF bf16 {hf_err.mean():.2e}), max|err| {err.max():.2e} "
                          f"(HF bf16 {hf_err.max():.2e}), argmax agreement {agree:.4f} (HF bf16 {hf_agree:.4f})")


def logits_checks(world: int) -> None:
    for label, kwargs in (("tiny Qwen2", TINY_QWEN2), ("Qwen2-0.5B-shaped", QWEN2_05B)):
        hf = hf_model(kwargs)
        ids = torch.randint(0, kwargs["vocab_size"], (4, 256), generator=torch.Generator().manual_seed(1)).cuda()
        with torch.no_grad():
            ref = hf(ids).logits.float()
            hf_bf16 = hf.to(torch.bfloat16)(ids).logits.float()
        hf.float()
        tp1 = megatron_logits(hf, ids, 1)
        compare(f"logits megatron TP1 == HF ({label}, bf16)", tp1, ref, hf_bf16)
        if world >= 2:
            tp2 = megatron_logits(hf, ids, 2)
            compare(f"logits megatron TP2 == TP1 ({label}, bf16)", tp2, ref, hf_bf16)
            say(f"     max|TP2 - TP1| = {(tp2 - tp1).abs().max():.2e}")
        del hf, ref, hf_bf16
        torch.cuda.empty_cache()


# --- 3: engine steps ------------------------------------------------------------------------------------------


def write_model(directory: Path) -> Path:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    path = directory / "qwen2-0.5b-random"
    if rank() == 0:
        torch.manual_seed(0)
        Qwen2ForCausalLM(Qwen2Config(**QWEN2_05B)).to(torch.bfloat16).save_pretrained(path)
        for f in (ROOT / "examples" / "models" / "tiny-qwen2").glob("tokenizer*"):
            shutil.copy(f, path)
    dist.barrier()
    return path


def engine_config(model: Path, tp: int, cp: int = 1):  # noqa: ANN201 - RLCConfig, imported lazily
    from rlc.config.defaults import fill_defaults
    from rlc.config.root import RLCConfig

    return fill_defaults(RLCConfig.model_validate({
        "backend": "megatron",
        "data": {"train_files": "unused.parquet", "train_batch_size": PROMPTS, "max_prompt_length": PROMPT_LEN,
                 "max_response_length": RESPONSE_LEN},
        "actor_rollout_ref": {
            "model": {"path": str(model), "enable_gradient_checkpointing": True},
            "rollout": {"n": SAMPLES, "temperature": 1.0, "log_prob_micro_batch_size_per_gpu": MICRO},
            "actor": {"ppo_mini_batch_size": PROMPTS, "ppo_micro_batch_size_per_gpu": MICRO, "use_kl_loss": True,
                      "kl_loss_coef": 0.001, "optim": {"lr": 1e-6},
                      "megatron": {"tensor_model_parallel_size": tp, "context_parallel_size": cp,
                                   "use_distributed_optimizer": True}},
            "ref": {"log_prob_micro_batch_size_per_gpu": MICRO}}}))


def synthetic_batch(vocab: int):  # noqa: ANN201 - TokenBatch
    """PROMPTS x SAMPLES rows: prompts left-padded to PROMPT_LEN, responses right-padded to RESPONSE_LEN."""
    from rlc_runtime.batch import TokenBatch

    g = torch.Generator().manual_seed(0)
    rows = PROMPTS * SAMPLES
    ids = torch.zeros(rows, PROMPT_LEN + RESPONSE_LEN, dtype=torch.long)
    keep = torch.zeros_like(ids)
    for p in range(PROMPTS):
        plen = int(torch.randint(PROMPT_LEN // 2, PROMPT_LEN + 1, (), generator=g))
        prompt = torch.randint(3, vocab, (plen,), generator=g)
        for s in range(SAMPLES):
            row, rlen = p * SAMPLES + s, int(torch.randint(RESPONSE_LEN // 2, RESPONSE_LEN + 1, (), generator=g))
            ids[row, PROMPT_LEN - plen:PROMPT_LEN] = prompt
            ids[row, PROMPT_LEN:PROMPT_LEN + rlen] = torch.randint(3, vocab, (rlen,), generator=g)
            keep[row, PROMPT_LEN - plen:PROMPT_LEN + rlen] = 1
    return TokenBatch(input_ids=ids, attention_mask=keep, position_ids=(keep.cumsum(-1) - 1).clamp(min=0),
                      responses=ids[:, PROMPT_LEN:], response_mask=keep[:, PROMPT_LEN:].float())


def timed(fn):  # noqa: ANN001, ANN201
    torch.cuda.synchronize()
    start = time.perf_counter()
    result = fn()
    torch.cuda.synchronize()
    return result, time.perf_counter() - start


def hf_log_probs(model_dir: Path, batch) -> tuple[torch.Tensor, torch.Tensor]:  # noqa: ANN001
    """(fp32, bf16) Hugging Face log-probs of the responses, as the FSDP engine computes them."""
    from transformers import AutoModelForCausalLM

    from rlc_runtime.algorithms.losses import log_probs_from_logits

    out = []
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).cuda().eval()
    for dtype in (torch.float32, torch.bfloat16):
        model.to(dtype)
        parts = []
        with torch.no_grad():
            for i in range(0, len(batch), 8):
                part = batch.select(list(range(i, min(i + 8, len(batch)))))
                logits = model(input_ids=part.input_ids.cuda(), attention_mask=part.attention_mask.cuda(),
                               position_ids=part.position_ids.cuda()).logits[:, part.prompt_length - 1:-1].float()
                parts.append(log_probs_from_logits(logits, part.responses.cuda()).cpu())
        out.append(torch.cat(parts))
    del model
    torch.cuda.empty_cache()
    return out[0], out[1]


def weights_checksum(engine) -> float:  # noqa: ANN001
    return sum(float(t.float().sum()) for _, t in engine.named_weights())


def engine_steps(world: int, workdir: Path, cp: int) -> None:
    from megatron.core import parallel_state

    from rlc_runtime.algorithms.advantages import grpo_outcome_advantage
    from rlc_runtime.engines.megatron import MegatronEngine
    from rlc_runtime.engines.update import compute_log_probs, policy_update

    if parallel_state.model_parallel_is_initialized():
        parallel_state.destroy_model_parallel()
    model_dir = write_model(workdir)
    cfg = engine_config(model_dir, world // cp, cp)
    torch.cuda.reset_peak_memory_stats()
    (actor, ref), build_s = timed(lambda: (MegatronEngine(cfg, "actor", "cuda"), MegatronEngine(cfg, "ref", "cuda")))
    update = policy_update(actor, cfg)
    say(f"     built actor + reference engines at TP {world // cp} x CP {cp} in {build_s:.1f} s")
    full = synthetic_batch(QWEN2_05B["vocab_size"])
    mine = full.chunk(world)[rank()]  # as the trainer scatters: one slice per rank
    tokens = int(full.attention_mask.sum())
    rewards = torch.rand(len(full), generator=torch.Generator().manual_seed(1)).round()
    advantages, _ = grpo_outcome_advantage(rewards, [i // SAMPLES for i in range(len(full))], full.response_mask)
    mine.advantages = advantages.chunk(world)[rank()]
    rows = []
    for step in range(STEPS):
        (old, _), lp_s = timed(lambda: compute_log_probs(actor, mine, MICRO))
        (ref_lp, _), ref_s = timed(lambda: compute_log_probs(ref, mine, MICRO))
        mine.old_log_probs, mine.ref_log_probs = old, ref_lp
        metrics, update_s = timed(lambda: update(mine))
        _, sync_s = timed(lambda: [None for _ in actor.named_weights()])
        rows.append((lp_s, ref_s, update_s, sync_s))
        say(f"     step {step}: log-probs {lp_s:.2f} s, ref {ref_s:.2f} s, update {update_s:.2f} s, weight gather "
            f"{sync_s:.2f} s | pg_loss {metrics['actor/pg_loss']:+.4f} kl {metrics['actor/kl_loss']:.2e} "
            f"ppo_kl {metrics['actor/ppo_kl']:+.2e} entropy {metrics['actor/entropy']:.3f} "
            f"grad_norm {metrics['actor/grad_norm']:.3f}")
        if step == 0:
            check("engine first update", all(torch.isfinite(torch.tensor(v)) for v in metrics.values())
                  and abs(metrics["actor/ppo_kl"]) < 1e-2 and metrics["actor/grad_norm"] > 0,
                  f"finite metrics, |ppo_kl| {abs(metrics['actor/ppo_kl']):.1e} (old = current weights), "
                  f"grad_norm {metrics['actor/grad_norm']:.3f}")
            first_old = old
    later = rows[1:] or rows
    mean = [sum(r[i] for r in later) / len(later) for i in range(4)]
    say(f"RESULT tokens/s (steps 1..{STEPS - 1}, {tokens} tokens per step over {world} GPU(s)): log-probs "
        f"{tokens / mean[0]:,.0f}, reference log-probs {tokens / mean[1]:,.0f}, update {tokens / mean[2]:,.0f}; "
        f"weight gather {mean[3]:.2f} s; step (without rollout) {sum(mean):.2f} s")
    peak = torch.tensor([torch.cuda.max_memory_allocated() / 2**30], device="cuda")
    dist.all_reduce(peak, op=dist.ReduceOp.MAX)
    say(f"RESULT peak GPU memory {peak.item():.1f} GiB (actor + reference + optimizer + activations)")
    check("engine weights move", not torch.equal(compute_log_probs(actor, mine, MICRO)[0], first_old),
          "log-probs after the updates differ from the first step's")

    want, want_bf16 = hf_log_probs(model_dir, mine)
    got, _ = compute_log_probs(ref, mine, MICRO)  # the reference holds the checkpoint's weights
    mask = mine.response_mask.bool()
    err, hf_err = (got - want).abs()[mask], (want_bf16 - want).abs()[mask]
    check("engine log-probs == HF (bf16)", bool(err.mean() <= 2 * hf_err.mean() + 1e-4),
          f"mean|err| {err.mean():.2e} (HF bf16 {hf_err.mean():.2e}), max|err| {err.max():.2e}")

    checkpoint = workdir / "checkpoint"
    before = weights_checksum(actor)
    _, save_s = timed(lambda: actor.save_checkpoint(checkpoint, update.state_dict()))
    update(mine)
    moved = weights_checksum(actor)
    _, load_s = timed(lambda: update.load_state_dict(actor.load_checkpoint(checkpoint)))
    check("distributed checkpoint round trip", weights_checksum(actor) == before != moved,
          f"save {save_s:.1f} s, load {load_s:.1f} s, weights restored exactly")


def main() -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--context-parallel", type=int, default=1, help="the engine's CP size (divides the GPUs)")
    cp = parser.parse_args().context_parallel
    warnings.filterwarnings("ignore")
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    torch.cuda.set_device(local_rank)
    dist.init_process_group("cpu:gloo,cuda:nccl")
    world = dist.get_world_size()
    import megatron.core

    say(f"megatron-core {megatron.core.__version__}, torch {torch.__version__}, {world} x "
        f"{torch.cuda.get_device_name()}")
    start = time.perf_counter()
    logits_checks(world)
    workdir = Path(tempfile.mkdtemp(prefix="megatron_bench_")) if rank() == 0 else None
    box = [str(workdir)]
    dist.broadcast_object_list(box, src=0)
    engine_steps(world, Path(box[0]), cp)
    say(f"RESULT {'FAIL: ' + ', '.join(FAILED) if FAILED else 'PASS'} ({time.perf_counter() - start:.0f} s)")
    dist.barrier()
    if rank() == 0:
        shutil.rmtree(box[0], ignore_errors=True)
    dist.destroy_process_group()
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
