"""The memory verdict on a run that really does not fit: refused before launch, out of memory when forced, and
running with the change the refusal names. On the GPU host:

    python bench/memory_oom.py [--micro 64] [--out DIR]

Uses `bench/grpo_gpu.py`'s 1.5B shape (32 prompts x 8 samples x 1024 new tokens) with the update's micro-batch
raised to `--micro` sequences, one training step. Prints one JSON line per launch and exits non-zero unless all
three behave as the plan said.
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

MICRO = "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu"


def launch(cfg: Path, run_dir: Path, sets: list[str], *flags: str) -> tuple[int, str]:
    subprocess.run(["rm", "-rf", str(run_dir)], check=True)
    args = [arg for kv in sets for arg in ("--set", kv)]
    done = subprocess.run([sys.executable, "-m", "rlc.cli", "launch", str(cfg), "--run-dir", str(run_dir), *args,
                           *flags], capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    error_log = run_dir / "error.log"
    text = done.stdout + done.stderr + (error_log.read_text() if error_log.exists() else "")
    return done.returncode, text


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--micro", type=int, default=64)
    parser.add_argument("--out", type=Path, default=Path("/tmp/rlc-bench"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    cfg = config(args.out, build(args.out, "1.5b"), "vllm", "fsdp", 1, "1.5b")
    too_big = [f"{MICRO}={args.micro}"]

    code, text = launch(cfg, args.out / "oom-refused", too_big)
    refusal = next((line for line in text.splitlines() if "exceeds the GPU" in line), "")
    fix = re.search(r"--set (\S+=\S+)", text)
    print(json.dumps({"launch": "plain", "exit": code, "refusal": refusal.strip(),
                      "fix": fix.group(1) if fix else None}), flush=True)

    code_forced, text = launch(cfg, args.out / "oom-forced", too_big, "--force")
    oom = "out of memory" in text.lower()
    print(json.dumps({"launch": "--force", "exit": code_forced, "out_of_memory": oom,
                      "tail": text.strip().splitlines()[-3:]}), flush=True)

    code_fixed = None
    if fix:
        run_dir = args.out / "oom-fixed"
        code_fixed, text = launch(cfg, run_dir, [fix.group(1)])
        metrics = run_dir / "metrics.jsonl"
        rows = [json.loads(line) for line in metrics.read_text().splitlines()] if metrics.exists() else []
        peak = max((r.get("perf/memory/update_actor/device_gb", 0.0) for r in rows), default=None)
        print(json.dumps({"launch": fix.group(1), "exit": code_fixed, "steps": len(rows),
                          "update_peak_gb": peak, "tail": text.strip().splitlines()[-2:]}), flush=True)
    sys.exit(0 if code != 0 and code_forced != 0 and oom and code_fixed == 0 else 1)


if __name__ == "__main__":
    main()
