"""The bubblewrap (`bwrap`) command line that isolates one submitted program.

Design decisions, and why:
- bubblewrap, Debian's well-kept sandbox tool (the one Flatpak uses), rather than namespaces set up by hand: it
  builds a fresh root from bind mounts, its own /proc and /dev, and drops capabilities, in one audited binary.
- The program sees a new, read-only root holding only what running Python needs: /usr and its merged-usr links,
  the Python installation and the server's environment (read-only), a few loader files of /etc, and a private
  tmpfs /tmp of a fixed size. Nothing else of the host exists for it: not /etc/shadow, not the server's home or
  files, not the host's /tmp, not the host's /proc (so no other process's environ, mem or namespaces).
- New pid, network (only a loopback of its own), mount, IPC, UTS and cgroup namespaces; --die-with-parent and a
  pid namespace mean that killing bwrap ends every process the program started.
- Who the program runs as. A server run by root runs bwrap as root (so that bwrap can mount a Python that lives
  under root's 0700 home) and the program then drops to `nobody` through `setpriv`: a real unprivileged uid with
  no capabilities, an empty bounding set and no_new_privs. Not a user namespace there: one created by root maps
  the program's uid to root outside, which owns the host's files. A server run by an ordinary user runs bwrap
  in a user namespace mapped to that user, without capabilities, and with further user namespaces disabled.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

SANDBOX_UID = 65534  # nobody: the conventional owner of nothing
PROGRAM_DIR = "/program"
ENVIRONMENT = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONIOENCODING": "utf-8",
               "PYTHONDONTWRITEBYTECODE": "1", "HOME": "/tmp"}
_SYSTEM = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
_ETC = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime")
_NAMESPACES = ("--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try")


@functools.cache
def version() -> str | None:
    """'bubblewrap 0.8.0', or None where bwrap is not installed or does not run."""
    found = shutil.which("bwrap")
    if found is None:
        return None
    try:
        done = subprocess.run([found, "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (done.stdout.strip() or None) if done.returncode == 0 else None


def as_root() -> bool:
    return os.geteuid() == 0


def command(program_dir: Path, tmp_bytes: int, seccomp_fd: int | None) -> list[str]:
    """bwrap's arguments up to the program's own command line, which follows them (`[*command(...), python, ...]`).

    `program_dir` (the submitted program's files) appears read-only at PROGRAM_DIR; /tmp is empty and writable;
    `seccomp_fd`, if any, is an inherited descriptor from which bwrap reads a compiled seccomp filter."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise RuntimeError("bwrap is not installed (apt-get install bubblewrap)")
    args = [bwrap, *_NAMESPACES, "--die-with-parent", "--new-session", "--clearenv",
            *(["--seccomp", str(seccomp_fd)] if seccomp_fd is not None else [])]
    for key, value in ENVIRONMENT.items():
        args += ["--setenv", key, value]
    args += _filesystem(program_dir, tmp_bytes)
    return args + (_drop_to_nobody() if as_root() else ["--unshare-user", "--disable-userns", "--cap-drop", "ALL",
                                                        "--"])


def _filesystem(program_dir: Path, tmp_bytes: int) -> list[str]:
    # The private /tmp and /dev/shm (multiprocessing's semaphores live there) come first, capped in size, so that a
    # Python installed under /tmp (a CI checkout, say) is bound on top of them rather than hidden by them.
    args = ["--proc", "/proc", "--dev", "/dev", "--perms", "1777", "--size", str(tmp_bytes), "--tmpfs", "/dev/shm",
            "--perms", "1777", "--size", str(tmp_bytes), "--tmpfs", "/tmp"]
    made: set[str] = {"/", "/dev", "/tmp"}
    for path in _visible_paths():
        for parent in reversed(Path(path).parents):  # bwrap would make missing parents 0700: unreadable for nobody
            if str(parent) not in made:
                made.add(str(parent))
                args += ["--perms", "0755", "--dir", str(parent)]
        made.add(path)
        args += ["--symlink", os.readlink(path), path] if os.path.islink(path) else ["--ro-bind", path, path]
    return [*args, "--remount-ro", "/dev", "--ro-bind", str(program_dir), PROGRAM_DIR, "--remount-ro", "/",
            "--chdir", "/tmp"]


@functools.cache
def _visible_paths() -> tuple[str, ...]:
    """The host paths the program sees, outermost first, none inside another (that one is already visible)."""
    paths = {p for p in (*_SYSTEM, *_ETC) if os.path.lexists(p)}
    python = {sys.prefix, sys.base_prefix, sys.exec_prefix, os.path.dirname(os.path.realpath(sys.executable)),
              *(sysconfig.get_paths()[key] for key in ("stdlib", "platstdlib", "purelib", "platlib"))}
    paths |= {os.path.realpath(p) for p in python if os.path.exists(p)} | {p for p in python if os.path.exists(p)}
    ordered = sorted(paths, key=lambda p: (p.count("/"), p))
    return tuple(p for p in ordered if not any(_inside(p, outer) for outer in ordered if outer != p
                                                and not os.path.islink(outer)))


def _inside(path: str, outer: str) -> bool:
    return path.startswith(outer.rstrip("/") + "/")


def _drop_to_nobody() -> list[str]:
    setpriv = shutil.which("setpriv")
    if setpriv is None or not any(_inside(setpriv, p) for p in _visible_paths()):
        raise RuntimeError("setpriv (util-linux) is needed to run submitted programs as nobody")
    # Only the capabilities setpriv needs to drop the uid; setuid to a non-zero uid then clears them all.
    return ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "--cap-add", "CAP_SETPCAP",
            "--", setpriv, f"--reuid={SANDBOX_UID}", f"--regid={SANDBOX_UID}", "--clear-groups", "--inh-caps=-all",
            "--bounding-set=-all", "--no-new-privs", "--"]
