"""Megatron context parallelism combined with tensor and pipeline parallelism, on 4 CPU ranks (gloo).

The test suite runs context parallel 2 alone on 2 ranks (`tests/runtime/engines/test_megatron_engine.py`); this
runs what needs 4 ranks, too slow for the suite on a 2-core machine (about 2 minutes): pipeline 2 x context 2
(Qwen2) and tensor 2 x context 2 (Llama), whose log-probs and entropy must equal the Hugging Face models' (fp32),
and one update at tensor 2 x context 2 that must land on the weights tensor 2 x data 2 reaches from the same
batch. It reuses the test harness (`cuda_as_cpu`, the tiny models and batch):

    PYTHONPATH=.:.pp python bench/megatron_cp_cpu.py      # .pp/rlc_runtime -> runtime/, as for the tests

Prints one line per check and exits non-zero if any fails.
"""

from __future__ import annotations

import socket
import sys
import tempfile
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "runtime" / "engines"))
import test_megatron_engine as harness  # noqa: E402

# name -> (tensor parallel, pipeline parallel, family, context parallel), on 4 ranks
LAYOUTS = {"pp2cp2": (1, 2, "qwen2", 2), "tp2cp2": (2, 1, "llama", 2), "tp2dp2": (2, 1, "llama", 1)}


def worker(rank: int, port: int, models: dict[str, str], out: str) -> None:
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    import torch.distributed as dist
    from megatron.core import parallel_state

    from rlc_runtime.engines.megatron import MegatronEngine
    from rlc_runtime.engines.update import compute_log_probs, policy_update

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", world_size=4, rank=rank)
    results = {}
    with harness.cuda_as_cpu():
        for name, (tp, pp, family, cp) in LAYOUTS.items():
            cfg = harness.make_config(Path(models[family]), tp, pp, cp)
            engine = MegatronEngine(cfg, role="actor", device="cpu")
            mine = harness.make_batch().chunk(4)[rank]  # as the trainer scatters: one row per rank
            log_probs, entropy = compute_log_probs(engine, mine, micro_batch_size=1, with_entropy=True)
            noise = torch.randn(log_probs.shape, generator=torch.Generator().manual_seed(rank))
            mine.old_log_probs, mine.ref_log_probs = log_probs + 0.3 * noise, log_probs - 0.1
            mine.advantages = torch.full(log_probs.shape, 1.0 if rank % 2 else -1.0)
            metrics = policy_update(engine, cfg)(mine)
            results[name] = {"log_probs": log_probs, "entropy": entropy, "metrics": metrics,
                             "weights": {k: v.clone() for k, v in engine.named_weights()}}
            parallel_state.destroy_model_parallel()
    torch.save(results, Path(out) / f"rank{rank}.pt")
    dist.barrier()
    dist.destroy_process_group()


def main() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        models = {family: str(harness.write_model(family, Path(tmp))) for family in ("qwen2", "llama")}
        torch.multiprocessing.spawn(worker, args=(port, models, tmp), nprocs=4)
        ranks = [torch.load(Path(tmp) / f"rank{r}.pt") for r in range(4)]
        mask = harness.make_batch().response_mask.bool()
        failed = []
        for name, (_, _, family, _) in LAYOUTS.items():
            want_lp, want_entropy, *_ = harness.hf_reference(models[family])
            got_lp, got_entropy = (torch.cat([r[name][k] for r in ranks]) for k in ("log_probs", "entropy"))
            err = max(float((got - want)[mask].abs().max()) for got, want in ((got_lp, want_lp),
                                                                             (got_entropy, want_entropy)))
            print(f"{'PASS' if err < 1e-4 else 'FAIL'} {name} log-probs and entropy == HF: max|err| {err:.1e}")
            failed += [name] if err >= 1e-4 else []
        got, want = ranks[0]["tp2cp2"], ranks[0]["tp2dp2"]
        diff = max(float((got["weights"][k] - want["weights"][k]).abs().max()) for k in want["weights"])
        same = diff < 2e-6 and abs(got["metrics"]["actor/grad_norm"] / want["metrics"]["actor/grad_norm"] - 1) < 1e-4
        print(f"{'PASS' if same else 'FAIL'} update at TP 2 x CP 2 == TP 2 x DP 2: max|weight diff| {diff:.1e}, "
              f"grad_norm {got['metrics']['actor/grad_norm']:.6f} vs {want['metrics']['actor/grad_norm']:.6f}")
        failed += [] if same else ["update"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
