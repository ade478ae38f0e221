"""The memory plan against the GPU: rlc's per-GPU estimate (plan.json) beside the peaks a real run measured.

Runs `bench/grpo_gpu.py`'s GRPO job (through `rlc launch`) for several configurations and prints, per phase, the
estimate and the measured device peak (`perf/memory/<phase>/device_gb`: torch's reserved peak plus what lies
outside its allocator), and vLLM's KV cache (the tokens its log reports) beside the estimate's. On the GPU host:

    python bench/memory_gpu.py [--only NAME ...] [--steps 3]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

from grpo_gpu import build, config

# name: (shape, backend, --set overrides)
RUNS = {
    "fsdp-0.5b": ("0.5b", "fsdp", []),
    "fsdp-1.5b": ("1.5b", "fsdp", []),
    "megatron-0.5b": ("0.5b", "megatron", []),
    "fsdp-0.5b-offload": ("0.5b", "fsdp", ["actor_rollout_ref.actor.fsdp_config.param_offload=true"]),
}
# the estimate's phases and the runtime's phases that make them
PHASES = {"rollout": ("gen", "update_weights"), "log_prob": ("old_log_prob", "ref"), "update": ("update_actor",)}
GiB = 2**30


def measure(name: str, out: Path, steps: int, extra: list[str]) -> dict[str, object]:
    shape, backend, sets = RUNS[name]
    cfg = config(out, build(out, shape), "vllm", backend, steps, shape)
    run_dir = out / f"mem-{name}"
    subprocess.run(["rm", "-rf", str(run_dir)], check=True)
    args = [arg for kv in sets + extra for arg in ("--set", kv)]
    log = out / f"mem-{name}.log"
    with log.open("w") as sink:
        code = subprocess.run([sys.executable, "-m", "rlc.cli", "launch", str(cfg), "--run-dir", str(run_dir), *args],
                              stdout=sink, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    text = log.read_text()
    if code.returncode != 0:
        return {"name": name, "error": text[-2000:]}
    plan = json.loads((run_dir / "plan.json").read_text())["memory"]
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    result: dict[str, object] = {"name": name}
    for phase, sources in PHASES.items():
        if phase not in plan["phases"]:
            continue
        estimate = sum(line["bytes"] for line in plan["phases"][phase]) / GiB
        measured = max((r.get(f"perf/memory/{s}/device_gb", 0.0) for r in rows for s in sources), default=0.0)
        result[phase] = {"estimate_gb": round(estimate, 2), "measured_gb": round(measured, 2),
                         "ratio": round(estimate / measured, 3) if measured else None}
        for kind in ("allocated", "reserved"):
            result[phase][kind + "_gb"] = round(max((r.get(f"perf/memory/{s}/{kind}_gb", 0.0) for r in rows
                                                     for s in sources), default=0.0), 2)
    kv = re.findall(r"KV cache size: ([\d,]+) tokens", text)
    result["kv_tokens"] = {"estimate": plan["kv_cache_tokens"],
                           "vllm": int(kv[-1].replace(",", "")) if kv else None}
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", nargs="*", default=list(RUNS), choices=list(RUNS))
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--set", action="append", default=[], help="passed on to every run")
    parser.add_argument("--out", type=Path, default=Path("/tmp/rlc-bench"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.only:
        print(json.dumps(measure(name, args.out, args.steps, args.set)), flush=True)


if __name__ == "__main__":
    main()
