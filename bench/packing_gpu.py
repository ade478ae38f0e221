"""The same GRPO run padded and packed, back to back on one GPU: does packing pay with flex_attention?

packed+flex: `use_remove_padding: true` with `override_config.attn_implementation: flex_attention` packs each
micro-batch into one row under transformers' flex_attention with a document block mask (runtime/engines/packing.py;
without flash-attn, rlc's default pads); padded: `use_remove_padding: false`, sdpa. On 2026-12-02 the first
packed+flex step had not finished after four minutes (compilation) on the H200. Everything else is
bench/grpo_gpu.py's run. Run from the repo root on the GPU host (PYTHONPATH as in ../shared/ENVIRONMENT.md):

    python bench/packing_gpu.py --shape 0.5b --steps 6 [--min-groups N] [--only RUN] [--out DIR] [--set KEY=VALUE]

At the benchmark's shape every prompt has 202 tokens and a random model's responses run to the limit, so there
is next to no padding and the two differ by their attention kernels only; `--min-groups 5` draws prompt lengths
from 5 to 40 groups (about 40 to 200 tokens), the padding a packed batch does not compute.

Prints the mean s/step and phases (steps after the first) of each, and packed/padded for each phase. Each run's
summary is kept in OUT/packing-SHAPE-RUN.json: `--only padded` (or packed+flex) runs one, so the two can go in
two calls; the table prints once both are kept.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import grpo_gpu  # noqa: E402 - the benchmark's run, shared

PHASES = ("step", "gen", "update_weights", "old_log_prob", "ref", "update_actor")
RUNS = {"padded": ["actor_rollout_ref.model.use_remove_padding=false"],
        "packed+flex": ["actor_rollout_ref.model.use_remove_padding=true",
                        "+actor_rollout_ref.model.override_config.attn_implementation=flex_attention"]}


def peak_gb(summary: dict[str, float]) -> float:
    return max((v for k, v in summary.items() if k.startswith("perf/memory/") and k.endswith("device_gb")),
               default=float("nan"))


def table(results: dict[str, dict[str, float]]) -> str:
    padded, packed = results["padded"], results["packed+flex"]
    lines = [f"{'phase (s)':<16}{'padded':>10}{'packed+flex':>13}{'packed/padded':>15}"]
    for phase in PHASES:
        a, b = padded.get(f"timing_s/{phase}", float("nan")), packed.get(f"timing_s/{phase}", float("nan"))
        lines.append(f"{phase:<16}{a:>10.3f}{b:>13.3f}{b / a if a else float('nan'):>15.2f}")
    lines.append(f"{'peak device GB':<16}{peak_gb(padded):>10.1f}{peak_gb(packed):>13.1f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    grpo_gpu.shape_arguments(parser)
    parser.add_argument("--set", action="append", default=[], help="passed on to both runs' `rlc launch --set`")
    parser.add_argument("--only", choices=sorted(RUNS), help="run this one alone")
    parser.add_argument("--min-groups", type=int, default=grpo_gpu.GROUPS,
                        help="prompts of MIN_GROUPS to 40 `a+b=` groups (default: all 40, no padding to save)")
    args = parser.parse_args()
    results = {}
    for name, sets in RUNS.items():
        kept = args.out / f"packing-{args.shape}-{args.min_groups}-{name}.json"
        if args.only in (None, name):
            summary = grpo_gpu.run(args.out, shape=args.shape, steps=args.steps, sets=args.set + sets,
                                   tag=name.replace("+", "-"), min_groups=args.min_groups)
            kept.write_text(json.dumps(summary))
        if kept.exists():
            results[name] = json.loads(kept.read_text())
    if len(results) < len(RUNS):
        print(f"kept so far: {', '.join(results) or 'nothing'}; the table needs both")
        return
    print(f"rlc fsdp + vLLM, shape {args.shape}, prompts of {args.min_groups}-40 groups, {args.steps} steps "
          f"(means of steps 2-{args.steps})")
    print(table(results))


if __name__ == "__main__":
    main()
