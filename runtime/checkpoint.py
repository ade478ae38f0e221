"""Checkpoint directories: written atomically, found again after any kill, pruned oldest first.

Layout, like verl's so that its tools find their way around:

    default_local_dir/
      global_step_N/            one complete checkpoint
        actor/                  each rank's engine state (model, optimizer, scheduler) and RNG
        critic/                 the same for the critic, when there is one
        trainer_state.pt        step, data-loader position, the controller's RNG (written last)
      latest_checkpointed_iteration.txt

Everything is written into `global_step_N.tmp-XXXX` and renamed into place only when complete, so a directory
named `global_step_N` is complete by construction; a kill at any moment leaves at worst a `.tmp-` folder that the
next run sweeps away. Resumption scans for the newest complete directory instead of trusting the text file (a kill
between the rename and the file's update would otherwise lose a checkpoint); the file is kept for verl's tools.
Old checkpoints are renamed to `.trash-` before deletion, so a half-deleted one never looks complete.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

PREFIX = "global_step_"
LATEST_FILE = "latest_checkpointed_iteration.txt"
STATE_FILE = "trainer_state.pt"
_COMPLETE = re.compile(rf"^{PREFIX}(\d+)$")


class CheckpointError(Exception):
    """A checkpoint that was asked for cannot be used; the message says which and why."""


def step_of(path: Path) -> int | None:
    match = _COMPLETE.match(path.name)
    return int(match.group(1)) if match else None


def is_complete(path: Path) -> bool:
    return step_of(path) is not None and (path / STATE_FILE).is_file()


def complete_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints under `root`, oldest first."""
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and is_complete(p)]
    return sorted(found, key=lambda p: step_of(p) or 0)


def find_latest(root: Path) -> Path | None:
    found = complete_checkpoints(root)
    return found[-1] if found else None


def resume_target(root: Path, resume_mode: str, resume_from_path: str | None) -> Path | None:
    """The checkpoint a run starts from: none (disable, or nothing saved yet), the latest, or the named one."""
    if resume_mode == "disable":
        return None
    if resume_mode == "resume_path":
        path = Path(resume_from_path or "").expanduser()
        if not is_complete(path):
            raise CheckpointError(f"trainer.resume_from_path {path} is not a complete checkpoint "
                                  f"(a {PREFIX}N folder holding {STATE_FILE})")
        return path
    return find_latest(root)


@contextmanager
def atomic_checkpoint(root: Path, step: int) -> Iterator[Path]:
    """Yield a temporary folder to fill; on success it becomes `root/global_step_{step}`, else it is removed."""
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{step}.tmp-", dir=root))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    final = root / f"{PREFIX}{step}"
    if final.exists():  # a re-run of the same step (resume disabled): the new one wins
        _discard(final)
    os.replace(tmp, final)
    write_text_atomic(root / LATEST_FILE, str(step))


def prune(root: Path, keep: int | None) -> list[Path]:
    """Delete all but the newest `keep` complete checkpoints; returns the deleted ones."""
    if not keep:
        return []
    old = complete_checkpoints(root)[:-keep]
    for path in old:
        _discard(path)
    return old


def sweep_incomplete(root: Path) -> None:
    """Remove what a killed run left half-written (`.tmp-`) or half-deleted (`.trash-`)."""
    if root.is_dir():
        for path in root.glob(f"{PREFIX}*"):
            if ".tmp-" in path.name or ".trash-" in path.name:
                shutil.rmtree(path, ignore_errors=True)


def save_trainer_state(directory: Path, step: int, sampler_state: dict[str, Any],
                       extra: dict[str, Any] | None = None) -> None:
    state = {"step": step, "sampler": sampler_state, "extra": extra or {},
             "rng": {"python": random.getstate(), "torch": torch.get_rng_state()}}
    _save_atomic(state, directory / STATE_FILE)


def load_trainer_state(directory: Path) -> dict[str, Any]:
    """The controller's state; restores its RNG as a side effect."""
    state = torch.load(directory / STATE_FILE, weights_only=False)
    random.setstate(state["rng"]["python"])
    torch.set_rng_state(state["rng"]["torch"])
    return state


def write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def _save_atomic(obj: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _discard(path: Path) -> None:
    trash = Path(tempfile.mkdtemp(prefix=f"{path.name}.trash-", dir=path.parent))
    os.replace(path, trash / path.name)
    shutil.rmtree(trash, ignore_errors=True)
