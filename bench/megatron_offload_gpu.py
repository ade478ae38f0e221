"""Megatron offload on GPUs: the memory it frees and the losses it keeps, at the Qwen2-0.5B shape.

Run from the repo root on the GPU host (as bench/megatron_gpu.py, whose model, batch and config it reuses), with
1 or 2 GPUs:

    PYTHONPATH=/tmp/site:. torchrun --nproc_per_node=1 bench/megatron_offload_gpu.py

Three variants of the same GRPO-style steps (actor + reference, KL loss, bf16, distributed optimizer, gradient
checkpointing; 8 prompts x 8 samples, ~128 + 256 tokens), each from the same random Qwen2-0.5B-shaped weights:

1. plain: everything stays on the GPU;
2. offload: actor `megatron.param_offload`, `grad_offload`, `optimizer_offload`, reference `param_offload`;
3. cpu-optimizer: `optim.override_optimizer_config` {optimizer_cpu_offload, optimizer_offload_fraction 1,
   overlap_cpu_optimizer_d2h_h2d, and use_precision_aware_optimizer where Transformer Engine is installed}
   (megatron's HybridDeviceOptimizer, as verl's large-model scripts set it).

For each it prints, per step, the losses and the memory: held between phases (allocated after a step: what stays
resident while the rollout would run), and the peak of the log-prob passes and of the update. Checks: offload
gives the plain run's losses and grad norms (the same kernels on the same bytes: equal up to the non-determinism of
the GPU's reductions, 1e-3 relative), its weights at the end agree, and it holds at least 80% of the expected
state less between phases (bf16 weights 2P, fp32 gradient buffer 4P, fp32 master weights and Adam moments 12P
over the data-parallel ranks, the reference's 2P; P = parameters per GPU). The HybridDeviceOptimizer variant must
run with finite losses within 1e-2 of the plain run's (a CPU Adam) and hold less between phases.

Every check prints PASS or FAIL; the exit status is non-zero if any failed.
"""

from __future__ import annotations

import gc
import importlib.util
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import megatron_gpu as base  # noqa: E402 - the shared model, batch and config (and the rlc_runtime path shim)
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

STEPS = 3
GiB = 2**30
VARIANTS = {
    "plain": {},
    "offload": {"actor": {"param_offload": True, "grad_offload": True, "optimizer_offload": True},
                "ref": {"param_offload": True}},
    "cpu-optimizer": {"override_optimizer_config": {"optimizer_cpu_offload": True, "optimizer_offload_fraction": 1.0,
                                                    "overlap_cpu_optimizer_d2h_h2d": True}},
}
if importlib.util.find_spec("transformer_engine") is not None:  # megatron-core 0.16 needs it for this one
    VARIANTS["cpu-optimizer"]["override_optimizer_config"]["use_precision_aware_optimizer"] = True


def variant_config(model: Path, world: int, name: str) -> Any:
    cfg = base.engine_config(model, world)
    options, arf = VARIANTS[name], cfg.actor_rollout_ref
    for key, value in options.get("actor", {}).items():
        setattr(arf.actor.megatron, key, value)
    for key, value in options.get("ref", {}).items():
        setattr(arf.ref.megatron, key, value)
    if "override_optimizer_config" in options:
        arf.actor.optim.override_optimizer_config = options["override_optimizer_config"]
    return cfg


def gib_max(value: float) -> float:
    box = torch.tensor([value / GiB], device="cuda")
    dist.all_reduce(box, op=dist.ReduceOp.MAX)
    return float(box)


def run_variant(name: str, model: Path, world: int) -> dict[str, Any]:
    from megatron.core import parallel_state

    from rlc_runtime.algorithms.advantages import grpo_outcome_advantage
    from rlc_runtime.engines.megatron import MegatronEngine
    from rlc_runtime.engines.update import compute_log_probs, policy_update

    if parallel_state.model_parallel_is_initialized():
        parallel_state.destroy_model_parallel()
    torch.manual_seed(0)
    cfg = variant_config(model, world, name)
    actor, ref = MegatronEngine(cfg, "actor", "cuda"), MegatronEngine(cfg, "ref", "cuda")
    update = policy_update(actor, cfg)
    full = base.synthetic_batch(base.QWEN2_05B["vocab_size"])
    mine = full.chunk(world)[base.rank()]
    rewards = torch.rand(len(full), generator=torch.Generator().manual_seed(1)).round()
    advantages, _ = grpo_outcome_advantage(rewards, [i // base.SAMPLES for i in range(len(full))], full.response_mask)
    mine.advantages = advantages.chunk(world)[base.rank()]
    torch.cuda.synchronize()
    out: dict[str, Any] = {"built": gib_max(torch.cuda.memory_allocated()), "steps": []}
    start = time.perf_counter()
    for step in range(STEPS):
        torch.cuda.reset_peak_memory_stats()
        old, _ = compute_log_probs(actor, mine, base.MICRO)
        ref_lp, _ = compute_log_probs(ref, mine, base.MICRO)
        log_prob_peak = gib_max(torch.cuda.max_memory_allocated())
        mine.old_log_probs, mine.ref_log_probs = old, ref_lp
        torch.cuda.reset_peak_memory_stats()
        metrics = update(mine)
        update_peak = gib_max(torch.cuda.max_memory_allocated())
        torch.cuda.synchronize()
        held = gib_max(torch.cuda.memory_allocated())
        out["steps"].append({"metrics": metrics, "held": held, "log_prob_peak": log_prob_peak,
                             "update_peak": update_peak})
        base.say(f"     {name} step {step}: pg_loss {metrics['actor/pg_loss']:+.6f} kl {metrics['actor/kl_loss']:.3e} "
                 f"grad_norm {metrics['actor/grad_norm']:.5f} | GiB held between phases {held:.2f}, log-prob peak "
                 f"{log_prob_peak:.2f}, update peak {update_peak:.2f}")
    out["seconds"] = time.perf_counter() - start
    out["checksum"] = base.weights_checksum(actor)
    out["params_per_gpu"] = sum(p.numel() for p in actor.module.parameters())
    del actor, ref, update
    gc.collect()
    torch.cuda.empty_cache()
    return out


def close(a: float, b: float, rel: float) -> bool:
    return abs(a - b) <= rel * max(abs(a), abs(b), 1e-6)


def compare(name: str, got: dict[str, Any], plain: dict[str, Any], rel: float) -> None:
    keys = ("actor/pg_loss", "actor/kl_loss", "actor/grad_norm")
    worst = max(abs(g["metrics"][k] - p["metrics"][k]) / max(abs(p["metrics"][k]), 1e-6)
                for g, p in zip(got["steps"], plain["steps"], strict=True) for k in keys)
    finite = all(torch.isfinite(torch.tensor(s["metrics"][k])) for s in got["steps"] for k in keys)
    base.check(f"{name}: losses and grad norms == plain", finite and worst <= rel,
               f"largest relative difference {worst:.1e} over {STEPS} steps (allowed {rel:.0e})")


def main() -> int:
    warnings.filterwarnings("ignore")
    torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group("cpu:gloo,cuda:nccl")
    world = dist.get_world_size()
    import tempfile

    workdir = Path(tempfile.mkdtemp(prefix="megatron_offload_")) if base.rank() == 0 else None
    box = [str(workdir)]
    dist.broadcast_object_list(box, src=0)
    model = base.write_model(Path(box[0]))
    results = {name: run_variant(name, model, world) for name in VARIANTS}
    plain, offload, hybrid = results["plain"], results["offload"], results["cpu-optimizer"]
    p = plain["params_per_gpu"]
    expected = (2 + 4 + 12 / world + 2) * p / GiB  # bf16 weights, fp32 grads, optimizer / dp, the reference
    for name, result in results.items():
        last = result["steps"][-1]
        base.say(f"RESULT {name}: GiB held between phases {last['held']:.2f} (after build {result['built']:.2f}), "
                 f"log-prob peak {max(s['log_prob_peak'] for s in result['steps']):.2f}, update peak "
                 f"{max(s['update_peak'] for s in result['steps']):.2f}; {result['seconds']:.1f} s for {STEPS} steps")
    compare("offload", offload, plain, 1e-3)
    freed = plain["steps"][-1]["held"] - offload["steps"][-1]["held"]
    base.check("offload frees the state between phases", freed >= 0.8 * expected,
               f"{freed:.2f} GiB less held (expected {expected:.2f} GiB: {p / 1e6:.0f}M parameters per GPU)")
    base.check("offload: same weights at the end", close(offload["checksum"], plain["checksum"], 1e-4),
               f"checksum {offload['checksum']:.6e} vs {plain['checksum']:.6e}")
    compare("cpu-optimizer", hybrid, plain, 1e-2)
    base.check("cpu-optimizer holds less between phases", hybrid["steps"][-1]["held"] < plain["steps"][-1]["held"],
               f"{hybrid['steps'][-1]['held']:.2f} vs {plain['steps'][-1]['held']:.2f} GiB")
    base.say(f"     cpu-optimizer overrides: {VARIANTS['cpu-optimizer']['override_optimizer_config']}")
    base.say(f"RESULT {'FAIL: ' + ', '.join(base.FAILED) if base.FAILED else 'PASS'}")
    dist.barrier()
    if base.rank() == 0:
        import shutil

        shutil.rmtree(box[0], ignore_errors=True)
    dist.destroy_process_group()
    return 1 if base.FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
