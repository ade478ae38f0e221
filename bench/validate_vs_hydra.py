"""Time `rlc validate` against Hydra's compose of verl's own PPO trainer config, side by side.

Both are timed as whole processes (start-up included, since that is what a user waits for), alternating A B A B,
and the ratio is taken pair by pair so that machine noise cancels. verl's YAMLs come from the verl wheel
(`pip download verl==0.9.1 --no-deps`; only its config folder is read, verl itself is not imported).

    python bench/validate_vs_hydra.py [--runs 10] [--verl-wheel PATH]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "examples" / "yaml" / "grpo_gsm8k.yaml"
HYDRA = """
import sys
from hydra import compose, initialize_config_dir
with initialize_config_dir(config_dir=sys.argv[1], version_base=None):
    cfg = compose(config_name="ppo_trainer", overrides=["algorithm.adv_estimator=grpo",
                  "data.train_batch_size=1024", "actor_rollout_ref.rollout.n=5"])
assert cfg.algorithm.adv_estimator == "grpo"
"""


def verl_config_dir(wheel: Path | None, scratch: Path) -> Path:
    if wheel is None:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "verl==0.9.1", "-d", str(scratch)],
                       check=True)
        wheel = next(scratch.glob("verl-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        members = [m for m in archive.namelist() if m.startswith("verl/trainer/config/")]
        archive.extractall(scratch, members)
    return scratch / "verl" / "trainer" / "config"


def timed(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--verl-wheel", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        config_dir = verl_config_dir(args.verl_wheel, Path(scratch))
        rlc = [sys.executable, "-m", "rlc.cli", "validate", str(CONFIG)]
        hydra = [sys.executable, "-c", HYDRA, str(config_dir)]
        timed(rlc), timed(hydra)  # warm the file cache
        pairs = [(timed(rlc), timed(hydra)) for _ in range(args.runs)]
    rlc_times, hydra_times = zip(*pairs, strict=True)
    ratios = [a / b for a, b in pairs]
    print(f"rlc validate (schema + models + rules): median {statistics.median(rlc_times):.3f} s")
    print(f"hydra compose of verl ppo_trainer:       median {statistics.median(hydra_times):.3f} s")
    print(f"ratio rlc/hydra: median {statistics.median(ratios):.2f} (min {min(ratios):.2f}, max {max(ratios):.2f})"
          f" over {args.runs} pairs")


if __name__ == "__main__":
    main()
