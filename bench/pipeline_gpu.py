"""Off-policy pipelining on the GPU host: seconds per step with generation overlapping training, against the same
placement without overlap, at bench/grpo_gpu.py's shapes (random-initialised Qwen2-0.5B by default).

    python bench/pipeline_gpu.py --gpus 1 [--shape 0.5b] [--steps 8] [--rollout vllm] [--set KEY=VALUE ...]
    python bench/pipeline_gpu.py --gpus 2 ...

`--gpus 1`: trainer and rollout are two processes sharing the one GPU (`rollout.share_trainer_gpu`, weights by
CUDA IPC); also runs the colocated baseline (`hybrid_engine: true`, vLLM sleeping while the trainer trains).
`--gpus 2`: one training GPU and one rollout GPU (`rollout.n_gpus_per_node: 1`, weights over NCCL in buckets).
Each placement runs with `algorithm.max_staleness` 0 (generate, then train) and 1 (one-step-off), through
`rlc launch`. It prints, per run, the mean seconds per step over the steps after the first two (warm-up, and the
pipeline filling), the mean and largest weight-transfer time (`timing_s/update_weights`) and the largest
`perf/staleness` (it fails if a step's staleness exceeds the bound), then the speed-up of pipelining.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from grpo_gpu import SHAPES, build, config  # noqa: E402 - the shapes and task are grpo_gpu's

SKIP = 2  # first steps left out of the means: warm-up (CUDA graphs, allocator), and the pipeline filling


def placements(gpus: int, memory_share: float) -> dict[str, list[str]]:
    """name -> --set overrides, per run."""
    if gpus == 1:
        shared = ["actor_rollout_ref.hybrid_engine=false", "actor_rollout_ref.rollout.share_trainer_gpu=true",
                  f"actor_rollout_ref.rollout.gpu_memory_utilization={memory_share}"]
        return {"colocated": [], "shared_k0": shared + ["algorithm.max_staleness=0"],
                "shared_k1": shared + ["algorithm.max_staleness=1"]}
    separate = ["actor_rollout_ref.hybrid_engine=false", "actor_rollout_ref.rollout.n_gpus_per_node=1"]
    return {"separate_k0": separate + ["algorithm.max_staleness=0"],
            "separate_k1": separate + ["algorithm.max_staleness=1"]}


def run(out: Path, cfg: Path, name: str, sets: list[str]) -> dict[str, float]:
    run_dir = out / f"pipeline-{name}"
    subprocess.run(["rm", "-rf", str(run_dir)], check=True)
    args = [arg for kv in sets for arg in ("--set", kv)]
    code = subprocess.run([sys.executable, "-m", "rlc.cli", "launch", str(cfg), "--run-dir", str(run_dir), *args],
                          env={**os.environ, "PYTHONUNBUFFERED": "1"}).returncode
    if code != 0:
        sys.exit(f"FAIL: {name} exited {code}")
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "timing_s/step" in r]
    bound = next((int(s.split("=")[1]) for s in sets if s.startswith("algorithm.max_staleness=")), 0)
    staleness = [r.get("perf/staleness", 0.0) for r in rows]
    if max(staleness) > bound:
        sys.exit(f"FAIL: {name}: staleness {staleness} exceeds max_staleness {bound}")
    timed = rows[SKIP:]
    transfers = [r["timing_s/update_weights"] for r in rows if "timing_s/update_weights" in r]
    return {"s_per_step": sum(r["timing_s/step"] for r in timed) / len(timed),
            "gen_s": sum(r.get("timing_s/gen", 0.0) for r in timed) / len(timed),
            "update_actor_s": sum(r.get("timing_s/update_actor", 0.0) for r in timed) / len(timed),
            "update_weights_s_mean": sum(transfers) / max(1, len(transfers)),
            "update_weights_s_max": max(transfers, default=0.0), "max_staleness_seen": max(staleness),
            "steps": len(rows)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gpus", type=int, default=1, choices=[1, 2])
    parser.add_argument("--rollout", default="vllm", choices=["vllm", "hf"])
    parser.add_argument("--shape", default="0.5b", choices=sorted(SHAPES))
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--memory-share", type=float, default=0.35,
                        help="--gpus 1: the rollout's gpu_memory_utilization beside the trainer")
    parser.add_argument("--set", action="append", default=[], help="passed on to every `rlc launch --set`")
    parser.add_argument("--out", type=Path, default=Path("/tmp/rlc-bench"))
    args = parser.parse_args()
    if args.steps <= SKIP:
        sys.exit(f"--steps must exceed {SKIP}")
    args.out.mkdir(parents=True, exist_ok=True)
    model_dir = build(args.out, args.shape)
    cfg = config(args.out, model_dir, args.rollout, "fsdp", args.steps, args.shape)
    results = {name: run(args.out, cfg, name, sets + args.set)
               for name, sets in placements(args.gpus, args.memory_share).items()}
    base, piped = ("shared_k0", "shared_k1") if args.gpus == 1 else ("separate_k0", "separate_k1")
    summary = {"gpus": args.gpus, "shape": args.shape, "rollout": args.rollout, "runs": results,
               "speedup_pipelined_vs_not": results[base]["s_per_step"] / results[piped]["s_per_step"]}
    if "colocated" in results:
        summary["speedup_pipelined_vs_colocated"] = results["colocated"]["s_per_step"] / results[piped]["s_per_step"]
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
