"""rlc, TRL+vLLM and vLLM alone, back to back on one GPU at one shape, and their ratios in one table.

rlc: bench/grpo_gpu.py (fsdp + vLLM, rlc's defaults: padded micro-batches without flash-attn). TRL: bench/trl_peer.py
(GRPOTrainer, vLLM colocate, the same model directory, prompts, token counts and batch), under torchrun.
vLLM alone: bench/vllm_alone.py (the same generation with nothing else). Each runs in its own process, one after
the other. From the repo root on the GPU host, after unpacking the wheels (../shared/ENVIRONMENT.md):

    PYTHONPATH=/tmp/site:$PWD:/tmp/rlcpath python bench/peers_gpu.py --shape 0.5b --steps 6 [--set KEY=VALUE ...]

Each part's result is kept in OUT/peers-SHAPE-PART.json: `--only rlc` (or trl, vllm) runs one part, so that a
shape too slow for one call runs in three, and a final `--only none` prints the table from what is kept.

TRL/rlc is s/step (more is better for rlc); rlc-gen/vLLM-alone is generated tokens/s of rlc's generation phase
(which includes putting vLLM to sleep) over vLLM alone (1.0 is vLLM's own speed).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
import grpo_gpu  # noqa: E402 - the rlc run
from packing_gpu import peak_gb  # noqa: E402

SAMPLES = 8  # rollout.n in bench/grpo_gpu.py
PARTS = ("rlc", "trl", "vllm")


def peer(command: list[str]) -> dict:
    """Run a peer script, echoing its output, and return its `RESULT {json}` line."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    result = None
    for line in process.stdout:
        print(line, end="", flush=True)
        if line.startswith("RESULT "):
            result = json.loads(line[len("RESULT "):])
    if process.wait() != 0 or result is None:
        sys.exit(f"FAIL: {' '.join(command)} exited {process.returncode} without a RESULT line")
    return result


def table(shape: str, steps: int, rlc: dict[str, float], trl: dict, alone: dict) -> str:
    _, prompts, _ = grpo_gpu.SHAPES[shape]
    rlc_step, trl_step = rlc["timing_s/step"], trl["mean_after_first"]
    rlc_gen = rlc["timing_s/gen"]
    rlc_tokens_per_s = prompts * SAMPLES * rlc.get("response_length/mean", float("nan")) / rlc_gen
    phases = ", ".join(f"{k.removeprefix('timing_s/')} {v:.2f}" for k, v in rlc.items()
                       if k.startswith("timing_s/") and k != "timing_s/step" and v >= 0.01)
    return "\n".join([
        f"shape {shape}: {prompts} prompts x {SAMPLES} samples x {grpo_gpu.SHAPES[shape][2]} new tokens, "
        f"means of steps 2-{steps}",
        "| run | s/step | generation s (tokens/s) | peak GiB |",
        "|---|---|---|---|",
        f"| rlc fsdp + vLLM | {rlc_step:.2f} | {rlc_gen:.2f} ({rlc_tokens_per_s:.0f}) | {peak_gb(rlc):.1f} device |",
        f"| TRL 1.16 + vLLM colocate | {trl_step:.2f} | - | {trl['peak_alloc_gib']:.1f} allocated |",
        f"| vLLM alone | - | {alone['mean_after_first']:.2f} ({alone['tokens_per_s']:.0f}) | - |",
        f"rlc phases (s): {phases}",
        f"TRL/rlc: {trl_step / rlc_step:.2f}x   rlc-gen/vLLM-alone: {rlc_tokens_per_s / alone['tokens_per_s']:.2f}",
    ])


def main() -> None:
    parser = argparse.ArgumentParser()
    grpo_gpu.shape_arguments(parser)
    parser.add_argument("--set", action="append", default=[], help="passed on to rlc's `rlc launch --set`")
    parser.add_argument("--only", choices=[*PARTS, "none"], help="run this part alone (none: print the table)")
    args = parser.parse_args()
    os.environ.setdefault("VLLM_USE_FLASHINFER_SAMPLER", "0")  # flashinfer is not packed for the GPU host
    common = ["--shape", args.shape, "--steps", str(args.steps), "--out", str(args.out)]
    commands = {"trl": [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=1",
                        str(BENCH / "trl_peer.py"), *common],
                "vllm": [sys.executable, str(BENCH / "vllm_alone.py"), *common]}
    results = {}
    for part in PARTS:
        kept = args.out / f"peers-{args.shape}-{part}.json"
        if args.only in (None, part):
            result = (grpo_gpu.run(args.out, shape=args.shape, steps=args.steps, sets=args.set, tag="peers")
                      if part == "rlc" else peer(commands[part]))
            args.out.mkdir(parents=True, exist_ok=True)
            kept.write_text(json.dumps(result))
        if kept.exists():
            results[part] = json.loads(kept.read_text())
    if len(results) == len(PARTS):
        print(table(args.shape, args.steps, results["rlc"], results["trl"], results["vllm"]))
    else:
        print(f"kept so far: {', '.join(results) or 'nothing'}; the table needs {', '.join(PARTS)}")


if __name__ == "__main__":
    main()
