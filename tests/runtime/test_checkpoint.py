"""Checkpoint directories: atomic under exceptions and SIGKILL, newest complete one found, old ones pruned."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rlc_runtime.checkpoint import (
    LATEST_FILE,
    STATE_FILE,
    CheckpointError,
    atomic_checkpoint,
    complete_checkpoints,
    find_latest,
    load_trainer_state,
    prune,
    resume_target,
    save_trainer_state,
    sweep_incomplete,
)


def _save(root: Path, step: int) -> Path:
    with atomic_checkpoint(root, step) as tmp:
        (tmp / "actor").mkdir()
        (tmp / "actor" / "model.pt").write_bytes(b"weights")
        save_trainer_state(tmp, step, {"epoch": 0, "position": step})
    return root / f"global_step_{step}"


def test_commit_renames_into_place_and_writes_latest(tmp_path: Path) -> None:
    path = _save(tmp_path, 3)
    assert (path / "actor" / "model.pt").read_bytes() == b"weights"
    assert (tmp_path / LATEST_FILE).read_text() == "3"
    assert [p.name for p in tmp_path.iterdir() if "tmp" in p.name] == []


def test_exception_inside_leaves_nothing(tmp_path: Path) -> None:
    _save(tmp_path, 1)
    with pytest.raises(RuntimeError), atomic_checkpoint(tmp_path, 2) as tmp:
        save_trainer_state(tmp, 2, {})
        raise RuntimeError("disk full")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["global_step_1", LATEST_FILE]
    assert find_latest(tmp_path) == tmp_path / "global_step_1"


KILLED_WRITER = """
import sys, time
from pathlib import Path
from rlc_runtime.checkpoint import atomic_checkpoint, save_trainer_state
with atomic_checkpoint(Path(sys.argv[1]), 5) as tmp:
    save_trainer_state(tmp, 5, {})
    (tmp / "actor").mkdir()
    print("writing", flush=True)
    time.sleep(60)
"""


def test_sigkill_mid_write_keeps_previous_latest(tmp_path: Path) -> None:
    _save(tmp_path, 4)
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    leftovers = [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name]
    assert len(leftovers) == 1  # the half-written folder, holding a state file, still does not count
    assert find_latest(tmp_path) == tmp_path / "global_step_4"
    assert (tmp_path / LATEST_FILE).read_text() == "4"
    sweep_incomplete(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["global_step_4", LATEST_FILE]


def test_latest_is_newest_complete_by_number(tmp_path: Path) -> None:
    for step in (2, 10, 9):
        _save(tmp_path, step)
    (tmp_path / "global_step_11").mkdir()  # no state file: not complete
    (tmp_path / "global_step_12.tmp-abc").mkdir()
    (tmp_path / "global_step_12.tmp-abc" / STATE_FILE).write_bytes(b"")
    assert find_latest(tmp_path) == tmp_path / "global_step_10"  # numeric order, not 9 > 10 as text
    # The text file says 9 (written last), the scan still finds 10.
    assert (tmp_path / LATEST_FILE).read_text() == "9"


def test_resaving_a_step_replaces_it(tmp_path: Path) -> None:
    _save(tmp_path, 1)
    with atomic_checkpoint(tmp_path, 1) as tmp:
        save_trainer_state(tmp, 1, {"position": 99})
    assert load_trainer_state(tmp_path / "global_step_1")["sampler"] == {"position": 99}
    assert not (tmp_path / "global_step_1" / "actor").exists()


def test_prune_keeps_newest(tmp_path: Path) -> None:
    for step in (1, 2, 3, 4):
        _save(tmp_path, step)
    deleted = prune(tmp_path, keep=2)
    assert [p.name for p in deleted] == ["global_step_1", "global_step_2"]
    assert [p.name for p in complete_checkpoints(tmp_path)] == ["global_step_3", "global_step_4"]
    assert prune(tmp_path, keep=None) == []
    assert not [p for p in tmp_path.iterdir() if "trash" in p.name]


def test_resume_modes(tmp_path: Path) -> None:
    assert resume_target(tmp_path, "auto", None) is None  # nothing saved yet: a fresh start
    _save(tmp_path, 1)
    _save(tmp_path, 2)
    assert resume_target(tmp_path, "auto", None) == tmp_path / "global_step_2"
    assert resume_target(tmp_path, "disable", None) is None
    assert resume_target(tmp_path, "resume_path", str(tmp_path / "global_step_1")) == tmp_path / "global_step_1"
    with pytest.raises(CheckpointError, match="global_step_7"):
        resume_target(tmp_path, "resume_path", str(tmp_path / "global_step_7"))


def test_trainer_state_restores_rng(tmp_path: Path) -> None:
    random.seed(0)
    torch.manual_seed(0)
    save_trainer_state(tmp_path, 7, {"epoch": 1, "position": 3}, {"kl_coef": 0.01})
    expected = (random.random(), torch.rand(3))
    random.random(), torch.rand(5)
    state = load_trainer_state(tmp_path)
    assert state["step"] == 7 and state["sampler"] == {"epoch": 1, "position": 3}
    assert state["extra"] == {"kl_coef": 0.01}
    assert random.random() == expected[0]
    assert torch.equal(torch.rand(3), expected[1])
