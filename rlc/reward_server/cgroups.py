"""One cgroup per submitted program run: a cap on the memory and the number of processes of all its processes
together, where the host lets the server make cgroups.

Design decisions, and why:
- Per-process limits alone (RLIMIT_AS) let a program multiply its memory by forking; a cgroup counts every
  process of the run, and also the tmpfs pages it writes. Where no cgroup can be made the sandbox falls back to
  RLIMIT_AS per process plus RLIMIT_NPROC, and /ping says so: whether cgroups work is detected, never assumed.
- The run's cgroup is made inside the server's own (the delegation convention: nothing of the host's tree
  outside the server's part is touched), in every hierarchy that has the controller: cgroup v1's separate
  memory and pids hierarchies, or cgroup v2's unified one where those controllers are enabled for children.
- Processes join before bwrap starts, through a `sh` that writes its own pid and then execs the rest, so that
  every process the program ever starts is born inside; writing the pid from the server after the start would
  race a program that forks at once.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import time
import uuid
from pathlib import Path

# Positional arguments, never interpolated: $1 is how many cgroup.procs files follow, then the command.
_JOIN = 'n=$1; shift; while [ "$n" -gt 0 ]; do echo $$ > "$1" || exit 125; shift; n=$((n-1)); done; exec "$@"'


class RunCgroup:
    """`with RunCgroup(memory_bytes, max_processes) as cgroup: Popen([*cgroup.join_prefix(), ...])`; on exit
    every process still inside is killed and the cgroup removed."""

    def __init__(self, memory_bytes: int, max_processes: int) -> None:
        self.directories: list[Path] = []
        name = f"rlc-sandbox-{uuid.uuid4().hex[:12]}"
        try:
            for parent, controllers in server_cgroups().items():
                directory = parent / name
                directory.mkdir()
                self.directories.append(directory)
                _set_limits(directory, controllers, memory_bytes, max_processes)
        except OSError:
            self.remove()
            raise

    def join_prefix(self) -> list[str]:
        return ["/bin/sh", "-c", _JOIN, "sh", str(len(self.directories)),
                *(str(d / "cgroup.procs") for d in self.directories)]

    def kill(self, timeout_s: float = 5.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            pids = {pid for d in self.directories for pid in _pids(d)}
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.01)

    def remove(self) -> None:
        for directory in self.directories:
            for _ in range(100):  # rmdir fails while killed processes are still being reaped
                try:
                    directory.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.01)
        self.directories = []

    def __enter__(self) -> RunCgroup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()
        self.remove()


@functools.cache
def unavailable_reason() -> str | None:
    """None where a run's cgroup can be made here, else why not (in words, for /ping)."""
    parents = server_cgroups()
    found = {c for controllers in parents.values() for c in controllers}
    if not {"memory", "pids"} <= found:
        return f"no cgroup hierarchy of this server offers {sorted({'memory', 'pids'} - found)}"
    try:
        RunCgroup(256 << 20, 16).remove()
    except OSError as e:
        return f"cannot make a cgroup inside the server's own ({e})"
    return None


@functools.cache
def server_cgroups() -> dict[Path, tuple[str, ...]]:
    """The server's own cgroup directory in each hierarchy that has a memory or pids controller."""
    try:
        membership = Path("/proc/self/cgroup").read_text().splitlines()
        mounts = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return {}
    parents: dict[Path, tuple[str, ...]] = {}
    for line in membership:
        _, names, path = line.split(":", 2)
        controllers = tuple(names.split(",")) if names else _v2_controllers(mounts, path)
        wanted = tuple(c for c in controllers if c in ("memory", "pids"))
        mount = _mount_point(mounts, names)
        if wanted and mount is not None:
            parents[mount / path.lstrip("/")] = wanted
    return parents


def _mount_point(mounts: list[str], names: str) -> Path | None:
    for line in mounts:
        fields, _, tail = line.partition(" - ")
        fstype, _, options = (tail.split(" ") + ["", "", ""])[:3]
        root, point = fields.split(" ")[3:5]
        if root != "/":  # a bind of part of a hierarchy: the paths in /proc/self/cgroup do not apply
            continue
        if (names and fstype == "cgroup" and set(names.split(",")) <= set(options.split(","))) or \
                (not names and fstype == "cgroup2"):
            return Path(point)
    return None


def _v2_controllers(mounts: list[str], path: str) -> tuple[str, ...]:
    mount = _mount_point(mounts, "")
    if mount is None:
        return ()
    try:  # what a child of the server's cgroup gets
        return tuple((mount / path.lstrip("/") / "cgroup.subtree_control").read_text().split())
    except OSError:
        return ()


def _set_limits(directory: Path, controllers: tuple[str, ...], memory_bytes: int, max_processes: int) -> None:
    if "memory" in controllers:
        if (directory / "memory.max").exists():  # v2
            (directory / "memory.max").write_text(str(memory_bytes))
            with contextlib.suppress(OSError):
                (directory / "memory.swap.max").write_text("0")
        else:
            (directory / "memory.limit_in_bytes").write_text(str(memory_bytes))
            with contextlib.suppress(OSError):  # absent where swap accounting is off: then there is no swap
                (directory / "memory.memsw.limit_in_bytes").write_text(str(memory_bytes))
    if "pids" in controllers:
        (directory / "pids.max").write_text(str(max_processes))


def _pids(directory: Path) -> set[int]:
    try:
        return {int(p) for p in (directory / "cgroup.procs").read_text().split()}
    except OSError:
        return set()
