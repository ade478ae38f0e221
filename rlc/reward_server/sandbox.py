"""Run one submitted Python program on one input, in a child process with limits; never in the server process.

Design decisions, and why:
- The limits (address space, CPU seconds, file size, no core dumps) are set by a tiny bootstrap that runs inside
  the child's interpreter before the submitted code, with soft == hard so the program cannot raise them again.
  Not `preexec_fn`: the server calls this from a thread pool, and `preexec_fn` is documented as unsafe in the
  presence of threads (the child may deadlock between fork and exec).
- When the server runs as root the bootstrap then drops to `nobody`, so the program cannot lift its own limits
  (root may raise a hard limit) nor write where the server can; but only where `nobody` can read the Python
  installation (a pyenv under /root cannot be), since a program that cannot import the standard library would
  fail every test. `privilege_drop()` says which.
- Where `unshare` works (root, or unprivileged user namespaces), the child gets its own network namespace (only a
  down loopback: no network at all) and its own PID namespace: when the wall-clock limit kills the namespace's
  first process, the kernel kills every process the program started, even one that called setsid(). Elsewhere the
  program runs with the network (`network_isolation()` says which, and the server's /ping reports it) and a kill
  of its process group ends it.
- stdin, stdout and stderr are files in a private temporary directory, not pipes: output is capped by
  RLIMIT_FSIZE instead of growing in the server's memory, and a program that never reads its input cannot block.
- The child's environment is a fixed minimal one, so secrets of the server (HF_TOKEN, API keys) never reach it.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import signal
import stat
import subprocess
import sys
import sysconfig
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

_BOOTSTRAP = """\
import os, resource, sys
memory, cpu, fsize, drop = (int(v) for v in sys.argv[1:5])
for limit, value in ((resource.RLIMIT_AS, memory), (resource.RLIMIT_CPU, cpu),
                     (resource.RLIMIT_FSIZE, fsize), (resource.RLIMIT_CORE, 0)):
    resource.setrlimit(limit, (value, value))
source = open(sys.argv[5], encoding="utf-8").read()
if drop:
    os.setgroups([]); os.setgid(65534); os.setuid(65534)
sys.argv = sys.argv[5:]
exec(compile(source, sys.argv[0], "exec"), {"__name__": "__main__", "__builtins__": __builtins__})
"""

_NAMESPACES = ["--net", "--pid", "--fork", "--kill-child"]
_ENV = {"PATH": os.defpath, "LANG": "C.UTF-8", "PYTHONIOENCODING": "utf-8", "PYTHONDONTWRITEBYTECODE": "1"}


@dataclass(frozen=True)
class Limits:
    time_s: float = 5.0
    memory_mb: int = 512
    output_bytes: int = 4 << 20


@dataclass(frozen=True)
class RunResult:
    status: Literal["ok", "error", "timeout"]
    returncode: int | None
    stdout: str
    stderr: str


@functools.cache
def _unshare_prefix() -> tuple[str, ...]:
    """The `unshare` command line that isolates the child, or () where the OS does not allow it."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return ()
    candidates = [[unshare, *_NAMESPACES]]
    if os.getuid() != 0:
        candidates.append([unshare, "--map-root-user", *_NAMESPACES])
    for prefix in candidates:
        try:
            done = subprocess.run([*prefix, "true"], capture_output=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if done.returncode == 0:
            return tuple(prefix)
    return ()


def network_isolation() -> bool:
    """Whether submitted programs run without network (and in their own PID namespace) on this machine."""
    return bool(_unshare_prefix())


@functools.cache
def privilege_drop() -> bool:
    """Whether programs run as `nobody`: the server is root and `nobody` can read the standard library."""
    if os.getuid() != 0:
        return False
    paths = sysconfig.get_paths()
    return all(_readable_by_others(Path(paths[key])) for key in ("stdlib", "platstdlib"))


def _readable_by_others(path: Path) -> bool:
    try:
        if not path.stat().st_mode & stat.S_IROTH:
            return False
        return all(parent.stat().st_mode & stat.S_IXOTH for parent in [path, *path.parents])
    except OSError:
        return False


def run_python(code: str, stdin: str, limits: Limits) -> RunResult:
    """Run `code` as a Python script reading `stdin`; blocks for at most about `limits.time_s` seconds."""
    with tempfile.TemporaryDirectory(prefix="rlc-sandbox-") as tmp:
        work = Path(tmp)
        # The program may run as `nobody`: it must be able to enter its directory, not to list or write it.
        work.chmod(0o711)
        program = work / "main.py"
        program.write_text(code, encoding="utf-8")
        (work / "stdin").write_text(stdin, encoding="utf-8")
        command = [*_unshare_prefix(), sys.executable, "-I", "-c", _BOOTSTRAP,
                   str(limits.memory_mb << 20), str(int(limits.time_s) + 1), str(limits.output_bytes),
                   str(int(privilege_drop())), str(program)]
        with open(work / "stdin", "rb") as fin, open(work / "stdout", "wb") as fout, \
                open(work / "stderr", "wb") as ferr:
            proc = subprocess.Popen(command, stdin=fin, stdout=fout, stderr=ferr, cwd=tmp, env=_ENV,
                                    start_new_session=True)
            try:
                returncode: int | None = proc.wait(timeout=limits.time_s)
            except subprocess.TimeoutExpired:
                returncode = None
            finally:
                _kill_group(proc)
        stdout = _read_capped(work / "stdout", limits.output_bytes)
        stderr = _read_capped(work / "stderr", 64 << 10)
    status = "timeout" if returncode is None else ("ok" if returncode == 0 else "error")
    return RunResult(status, returncode, stdout, stderr)


def _kill_group(proc: subprocess.Popen) -> None:
    # Also after a clean exit: a background child the program left behind must not outlive the verdict.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _read_capped(path: Path, cap: int) -> str:
    with open(path, "rb") as f:
        return f.read(cap).decode("utf-8", errors="replace")
