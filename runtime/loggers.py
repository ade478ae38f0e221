"""Metric sinks under verl's `trainer.logger` names: console, jsonl, tensorboard, wandb.

`metrics.jsonl` is the record a run keeps: one object per step, appended and flushed at once so that a SIGKILL
loses nothing already logged. On resume the lines of steps after the checkpoint are dropped (they are run again),
so the file never holds a step twice. A sink that cannot start (wandb not installed) is a warning, never a failure:
losing a dashboard must not cost a training run.

The config a sink records (wandb's run config) is the file the compiler wrote, not the config in memory: the
runtime resolved `${oc.env:HF_TOKEN}` from its environment, and that value must never reach a dashboard. Literal
credentials are redacted as well (rlc.secrets).
"""

from __future__ import annotations

import json
import math
import os
import sys
import warnings
from pathlib import Path
from typing import Any, Protocol

from rlc.secrets import redact

CONSOLE_KEYS = (("score", "critic/score/mean"), ("len", "response_length/mean"), ("pg_loss", "actor/pg_loss"),
                ("kl", "actor/kl_loss"), ("vf_loss", "critic/vf_loss"), ("entropy", "actor/entropy"),
                ("grad", "actor/grad_norm"), ("s/step", "timing_s/step"))


class Sink(Protocol):
    def log(self, metrics: dict[str, float], step: int) -> None: ...

    def close(self) -> None: ...


class ConsoleSink:
    """A progress bar on a terminal and one compact line per step everywhere (log files included)."""

    def __init__(self, total_steps: int, start_step: int) -> None:
        from tqdm import tqdm

        self.total = total_steps
        self.bar = tqdm(total=total_steps, initial=start_step, desc="training", unit="step",
                        disable=not sys.stderr.isatty(), dynamic_ncols=True)

    def log(self, metrics: dict[str, float], step: int) -> None:
        parts = [f"step {step}/{self.total}"]
        parts += [f"{label} {_short(metrics[key])}" for label, key in CONSOLE_KEYS if key in metrics]
        parts += [f"{key.split('/', 1)[1]} {_short(v)}" for key, v in metrics.items() if key.startswith("val-core/")]
        self.bar.write("  ".join(parts), file=sys.stdout)
        sys.stdout.flush()
        if self.bar.n < step:
            self.bar.update(step - self.bar.n)

    def close(self) -> None:
        self.bar.close()


class JsonlSink:
    def __init__(self, path: Path, start_step: int) -> None:
        _truncate_after(path, start_step)
        self.file = path.open("a", encoding="utf-8")

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.file.write(json.dumps({"step": step, **metrics}, allow_nan=True) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()


class TensorboardSink:
    def __init__(self, directory: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(directory))

    def log(self, metrics: dict[str, float], step: int) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbSink:
    """The run id is kept in the run directory so that a resumed run continues the same wandb run."""

    def __init__(self, run_dir: Path, project: str, experiment: str, config: dict[str, Any]) -> None:
        import wandb

        id_file = run_dir / "wandb_id.txt"
        run_id = id_file.read_text().strip() if id_file.exists() else wandb.util.generate_id()
        id_file.write_text(run_id)
        self.run = wandb.init(project=project, name=experiment, id=run_id, resume="allow", config=config,
                              dir=str(run_dir))

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.run.log(metrics, step=step)

    def close(self) -> None:
        self.run.finish()


def config_to_log(run_dir: Path) -> dict[str, Any]:
    """RUN_DIR/config.resolved.yaml as written: environment references unresolved, credentials redacted."""
    from ruamel.yaml import YAML

    return redact(YAML(typ="safe").load((run_dir / "config.resolved.yaml").read_text(encoding="utf-8")))


class Tracking:
    """All configured sinks behind one `log(metrics, step)`."""

    def __init__(self, names: list[str], run_dir: Path, project: str, experiment: str, config: dict[str, Any],
                 total_steps: int, start_step: int) -> None:
        config = redact(config)
        self.sinks: list[Sink] = []
        for name in names:
            sink = _make_sink(name, run_dir, project, experiment, config, total_steps, start_step)
            if sink is not None:
                self.sinks.append(sink)

    def log(self, metrics: dict[str, float], step: int) -> None:
        clean = {k: float(v) for k, v in metrics.items() if isinstance(v, int | float) and math.isfinite(v)}
        for sink in self.sinks:
            sink.log(clean, step)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()


def _make_sink(name: str, run_dir: Path, project: str, experiment: str, config: dict[str, Any],
               total_steps: int, start_step: int) -> Sink | None:
    if name == "console":
        return ConsoleSink(total_steps, start_step)
    if name == "jsonl":
        return JsonlSink(run_dir / "metrics.jsonl", start_step)
    if name == "tensorboard":
        return TensorboardSink(run_dir / "tensorboard")
    if name == "wandb":
        try:
            return WandbSink(run_dir, project, experiment, config)
        except ImportError:
            warnings.warn("trainer.logger has wandb, but wandb is not installed: skipping it "
                          "(pip install 'rlc[wandb]')", stacklevel=2)
            return None
    warnings.warn(f"trainer.logger {name!r} is not implemented: skipping it", stacklevel=2)
    return None


def _truncate_after(path: Path, step: int) -> None:
    """Keep the lines of steps <= `step` (and drop a line a kill cut short); atomic like every rewrite."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line).get("step", 0) <= step:
                kept.append(line + "\n")
        except json.JSONDecodeError:
            continue
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text("".join(kept), encoding="utf-8")
    os.replace(tmp, path)


def _short(value: float) -> str:
    return f"{value:.4g}"
