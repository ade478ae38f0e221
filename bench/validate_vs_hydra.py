"""`rlc validate` of verl's whole config, cold, against a Hydra compose of the same config, side by side.

Each command is a fresh process (imports included, as a user meets them), run in turn - rlc, Hydra, rlc, Hydra ... -
after one warm-up run each, so a drift in the machine's speed hits both alike. Printed per command: the median, min
and max of wall seconds and of CPU seconds (user + system, the kernel's accounting of the finished child), then the
median of the pairwise ratios rlc / Hydra. On a shared machine quote CPU seconds: wall time there is mostly waiting.

- rlc: `rlc validate` of verl's dumped `verl/trainer/config/_generated_ppo_trainer.yaml` (every key of verl's fsdp
  trainer) with the overrides a user gives to make it runnable (`OVERRIDES`), and of a user's config, rlc's
  `examples/yaml/grpo_gsm8k.yaml` (rlc fills in the rest of the key space, as Hydra does from its defaults);
- Hydra: `compose(config_name="ppo_trainer")` from verl's config directory with the same overrides, resolved to a
  container (what verl's `main_ppo` does before it reads a value); Hydra is in the `test` extra;
- `rlc --help`, for the start-up budget (issue 18: at most 0.15 s on a quiet machine).

    python bench/validate_vs_hydra.py VERL_CHECKOUT [-n RUNS]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "yaml" / "grpo_gsm8k.yaml"
OVERRIDES = ["actor_rollout_ref.model.path=Qwen/Qwen2.5-0.5B", "actor_rollout_ref.rollout.name=vllm",
             "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2", "critic.ppo_micro_batch_size_per_gpu=2"]
RLC_ONLY = ["actor_rollout_ref.rollout.mode=sync"]  # verl's default `async` is issue 19's; until then, sync
HYDRA = """
import sys
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
with initialize_config_dir(config_dir=sys.argv[1], version_base=None):
    OmegaConf.to_container(compose(config_name="ppo_trainer", overrides=sys.argv[2:]), resolve=True)
"""


def timed(command: list[str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one run; a failing run stops the bench with its output."""
    start = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    output = child.stdout.read() if child.stdout else b""
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{' '.join(command)} failed:\n{output.decode(errors='replace')}")
    return wall, usage.ru_utime + usage.ru_stime


def line(label: str, values: list[float]) -> str:
    return f"{label:<36} median {statistics.median(values):6.3f}   min {min(values):6.3f}   max {max(values):6.3f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("verl", type=Path, help="a checkout of verl (its verl/trainer/config is read)")
    parser.add_argument("-n", "--runs", type=int, default=10)
    options = parser.parse_args()
    config_dir = (options.verl / "verl" / "trainer" / "config").resolve()
    dumped = config_dir / "_generated_ppo_trainer.yaml"
    sets = [word for text in OVERRIDES + RLC_ONLY for word in ("--set", text)]
    commands = {
        "rlc validate": [sys.executable, "-m", "rlc.cli", "validate", str(dumped), *sets],
        "rlc validate (example)": [sys.executable, "-m", "rlc.cli", "validate", str(EXAMPLE)],
        "hydra compose": [sys.executable, "-c", HYDRA, str(config_dir), *OVERRIDES],
        "rlc --help": [sys.executable, "-m", "rlc.cli", "--help"],
    }
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
    for index in range(options.runs + 1):
        for name, command in commands.items():
            result = timed(command)
            if index:  # the first round warms the file cache
                runs[name].append(result)
    for name, results in runs.items():
        print(line(f"{name} wall s", [w for w, _ in results]))
        print(line(f"{name} cpu s", [c for _, c in results]))
    for name in ("rlc validate", "rlc validate (example)"):
        for what, at in (("wall", 0), ("cpu", 1)):
            ratios = [a[at] / b[at] for a, b in zip(runs[name], runs["hydra compose"], strict=True)]
            print(line(f"{name.replace('rlc validate', 'validate')} / hydra ({what})", ratios))
    return 0


if __name__ == "__main__":
    sys.exit(main())
