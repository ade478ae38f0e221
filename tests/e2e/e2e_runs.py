"""Whole runs on CPU with the tiny model and the bundled arithmetic task: run directories written here.

`run_dir(tmp, **sections)` writes `config.resolved.yaml` the way the compiler does (defaults made explicit),
sized to take a second or two per step on 2 cores.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from rlc.config.defaults import fill_defaults
from rlc.config.root import RLCConfig

ROOT = Path(__file__).resolve().parents[2]
SMALL: dict[str, Any] = {
    "algorithm": {"adv_estimator": "grpo"},
    "data": {"train_files": str(ROOT / "examples/data/arith_train.parquet"),
             "val_files": str(ROOT / "examples/data/arith_test.parquet"), "val_max_samples": 8,
             "train_batch_size": 4, "max_prompt_length": 16, "max_response_length": 4},
    "actor_rollout_ref": {
        "model": {"path": str(ROOT / "examples/models/tiny-qwen2"), "enable_gradient_checkpointing": False},
        "actor": {"optim": {"lr": 5e-4}, "ppo_mini_batch_size": 2, "ppo_micro_batch_size_per_gpu": 8},
        "rollout": {"name": "hf", "n": 4, "log_prob_micro_batch_size_per_gpu": 16},
    },
    "trainer": {"device": "cpu", "nnodes": 1, "n_gpus_per_node": 1, "total_training_steps": 3, "save_freq": -1,
                "test_freq": -1, "val_before_train": False, "logger": ["console", "jsonl"]},
}


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = json.loads(json.dumps(base))
    for key, value in extra.items():
        out[key] = merge(out.get(key, {}), value) if isinstance(value, dict) else value
    return out


def write_run_dir(directory: Path, **sections: dict[str, Any]) -> RLCConfig:
    tree = merge(SMALL, {"trainer": {"default_local_dir": str(directory / "checkpoints")}})
    cfg = fill_defaults(RLCConfig.model_validate(merge(tree, sections)))
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.resolved.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    return cfg


def read_metrics(directory: Path) -> list[dict[str, float]]:
    return [json.loads(line) for line in (directory / "metrics.jsonl").read_text().splitlines()]
