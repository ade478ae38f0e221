"""Run one submitted Python program on one input, isolated from the server and the host, or refuse to.

Design decisions, and why:
- Isolation holds or code is refused. Each program runs under bubblewrap (see `bwrap`: unprivileged, fresh
  pid/network/mount/IPC namespaces and /proc, a read-only root with only Python in it, a size-capped private
  /tmp, no capabilities, no inherited environment or descriptors), behind a seccomp filter (see `seccomp`: no
  new user namespaces), inside a cgroup of its own where the host allows one (see `cgroups`). What holds is
  probed once per process by running a real program (see `probe`); where anything is missing `run_python`
  raises SandboxRefused, and only `allow_unsafe=True` (the server's --allow-unsafe-code) runs the program
  anyway, with the per-process limits alone.
- The per-process limits (address space, CPU seconds, file size, no core dumps, and the process count where no
  cgroup counts them) are set by a tiny bootstrap inside the child's interpreter before the submitted code, with
  soft == hard, so the program cannot raise them. Not `preexec_fn`: the server calls this from threads, and
  `preexec_fn` is documented as unsafe in the presence of threads.
- On the wall-clock limit, and also after a clean exit, bwrap's process group is killed: bwrap's pid namespace
  then takes every process the program started with it, even one that called setsid(), and the cgroup is
  emptied and removed. No orphans.
- stdin, stdout and stderr are files of the server's, passed as descriptors, not pipes: output is capped by
  RLIMIT_FSIZE instead of growing in the server's memory, and a program that never reads its input cannot block.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from rlc.reward_server import bwrap, cgroups, probe, seccomp

_BOOTSTRAP = """\
import resource, sys
memory, cpu, fsize, nproc = (int(v) for v in sys.argv[1:5])
limits = [(resource.RLIMIT_AS, memory), (resource.RLIMIT_CPU, cpu), (resource.RLIMIT_FSIZE, fsize),
          (resource.RLIMIT_CORE, 0)] + ([(resource.RLIMIT_NPROC, nproc)] if nproc else [])
for limit, value in limits:
    resource.setrlimit(limit, (value, value))
source = open(sys.argv[5], encoding="utf-8").read()
sys.argv = sys.argv[5:]
exec(compile(source, sys.argv[0], "exec"), {"__name__": "__main__", "__builtins__": __builtins__})
"""


@dataclass(frozen=True)
class Limits:
    time_s: float = 5.0  # wall clock; CPU time is capped at the next whole second above it
    memory_mb: int = 512  # all processes of the run together where a cgroup counts them, else each
    output_bytes: int = 4 << 20  # stdout, and every file the program writes
    processes: int = 64  # processes and threads
    tmp_bytes: int = 64 << 20  # the private /tmp, and /dev/shm likewise


@dataclass(frozen=True)
class RunResult:
    status: Literal["ok", "error", "timeout"]
    returncode: int | None
    stdout: str
    stderr: str


class SandboxRefused(RuntimeError):
    """This host cannot isolate submitted programs and running them anyway was not allowed."""


def run_python(code: str, stdin: str, limits: Limits, argv: Sequence[str] = (), *,
               allow_unsafe: bool = False) -> RunResult:
    """Run `code` as a Python script with `argv`, reading `stdin`; blocks for at most about `limits.time_s`
    seconds. Raises SandboxRefused where `isolation()` is incomplete, unless `allow_unsafe`."""
    report = isolation()
    if not report["isolated"] and not allow_unsafe:
        raise SandboxRefused(refusal(report))
    return _execute(code, stdin, limits, argv, isolated=report["isolated"])


@functools.cache
def isolation() -> dict[str, Any]:
    """What isolates submitted programs here: `isolated` (all of it holds) and each property; probed once."""
    return probe.report(lambda code, stdin, limits, argv: _execute(code, stdin, Limits(**limits), argv, True))


def network_isolation() -> bool:
    """Whether submitted programs run without network (in a network namespace with only a loopback of its own)."""
    return bool(isolation()["net_namespace"])


def refusal(report: dict[str, Any]) -> str:
    missing = ", ".join(report["not_isolated"])
    reason = f" ({report['reason']})" if "reason" in report else ""
    return (f"code tests are refused: this server cannot isolate submitted programs{reason}; not isolated: "
            f"{missing}. GET /ping shows what is; start the server with --allow-unsafe-code to run them anyway")


def _execute(code: str, stdin: str, limits: Limits, argv: Sequence[str], isolated: bool) -> RunResult:
    use_cgroup = isolated and cgroups.unavailable_reason() is None
    with tempfile.TemporaryDirectory(prefix="rlc-sandbox-") as tmp, _cgroup(limits, use_cgroup) as cgroup, \
            _seccomp_fd(isolated) as filter_fd:
        work = Path(tmp)
        program_dir = work / "program"
        program_dir.mkdir(mode=0o755)
        (program_dir / "main.py").write_text(code, encoding="utf-8")
        (program_dir / "main.py").chmod(0o644)  # the program may run as nobody
        (work / "stdin").write_text(stdin, encoding="utf-8")
        if isolated:
            prefix = [*(cgroup.join_prefix() if cgroup else []),
                      *bwrap.command(program_dir, limits.tmp_bytes, filter_fd)]
            program = f"{bwrap.PROGRAM_DIR}/main.py"
        else:
            prefix, program = [], str(program_dir / "main.py")
        command = [*prefix, sys.executable, "-I", "-c", _BOOTSTRAP, str(limits.memory_mb << 20),
                   str(math.floor(limits.time_s) + 1), str(limits.output_bytes),
                   str(0 if cgroup else limits.processes), program, *argv]
        returncode = _wait(command, work, limits.time_s, () if filter_fd is None else (filter_fd,))
        stdout = _read_capped(work / "stdout", limits.output_bytes)
        stderr = _read_capped(work / "stderr", 64 << 10)
    status = "timeout" if returncode is None else ("ok" if returncode == 0 else "error")
    return RunResult(status, returncode, stdout, stderr)


@contextlib.contextmanager
def _cgroup(limits: Limits, wanted: bool) -> Iterator[cgroups.RunCgroup | None]:
    if not wanted:
        yield None
        return
    with cgroups.RunCgroup(limits.memory_mb << 20, limits.processes) as cgroup:
        yield cgroup


@contextlib.contextmanager
def _seccomp_fd(wanted: bool) -> Iterator[int | None]:
    """A pipe holding the compiled seccomp filter, for bwrap to read (it closes its copy: none reaches the program)."""
    program = seccomp.program() if wanted else None
    if program is None:
        yield None
        return
    read, write = os.pipe()
    try:
        os.write(write, program)  # a filter is a few hundred bytes: far below a pipe's buffer
        os.close(write)
        yield read
    finally:
        os.close(read)


def _wait(command: list[str], work: Path, time_s: float, pass_fds: tuple[int, ...]) -> int | None:
    """The exit status, or None at the time limit; the program's process group is killed either way."""
    with open(work / "stdin", "rb") as fin, open(work / "stdout", "wb") as fout, \
            open(work / "stderr", "wb") as ferr:
        proc = subprocess.Popen(command, stdin=fin, stdout=fout, stderr=ferr, cwd=work, env=bwrap.ENVIRONMENT,
                                start_new_session=True, pass_fds=pass_fds)
        try:
            return proc.wait(timeout=time_s)
        except subprocess.TimeoutExpired:
            return None
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _read_capped(path: Path, cap: int) -> str:
    with open(path, "rb") as f:
        return f.read(cap).decode("utf-8", errors="replace")
