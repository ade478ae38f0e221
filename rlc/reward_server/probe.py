"""What the sandbox actually isolates on this host, found by running a probe program in it, never assumed.

Design decisions, and why:
- Each property is tested the way an attacker would test it (write to the root, to site-packages and to /dev;
  read /etc/shadow and a 0600 file of the server's; make a user namespace; fork past the limit; allocate past
  the total memory with several children) and compared with the server's own view (its namespace ids), so the
  report /ping shows is what held for a real program, on this host, at start.
- `isolated` needs every property but the total memory cap: where no cgroup can be made, RLIMIT_AS per process
  times RLIMIT_NPROC processes plus the tmpfs cap bound the memory instead, and the report says so in words.
"""

from __future__ import annotations

import json
import os
import secrets
import sysconfig
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rlc.reward_server import bwrap, cgroups

PROCESSES = 12  # the probe's process limit; it forks well past it
MEMORY_MB = 128  # each of MEMORY_CHILDREN holds CHILD_MB at once: over the total, each well under RLIMIT_AS
MEMORY_CHILDREN, CHILD_MB = 4, 48
TMP_BYTES = 1 << 20
NAMESPACES = ("pid", "net", "mnt", "ipc", "uts")
REQUIRED = ("unprivileged", "no_capabilities", "no_new_user_namespaces", "syscall_filter",
            *(f"{n}_namespace" for n in NAMESPACES), "own_proc",
            "read_only_filesystem", "secrets_hidden", "private_tmp", "clean_environment", "no_inherited_fds",
            "process_limit")

SCRIPT = """\
import ctypes, json, os, socket, sys, time
out = {}
status = dict(l.split(":", 1) for l in open("/proc/self/status").read().splitlines() if ":" in l)
out["caps"] = [int(status[k], 16) for k in ("CapInh", "CapPrm", "CapEff", "CapAmb")]
out["no_new_privs"] = status["NoNewPrivs"].strip() == "1"
out["seccomp"] = status["Seccomp"].strip() == "2"
pid = os.fork()
if pid == 0:  # in a child, so that the probe itself stays where it is
    os._exit(0 if ctypes.CDLL(None, use_errno=True).unshare(0x10000000) == 0 else 1)
out["user_namespace_made"] = os.waitpid(pid, 0)[1] == 0
uid = os.getuid()
out["outside_uid"] = next((int(o) + uid - int(i) for i, o, n in (l.split() for l in open("/proc/self/uid_map"))
                           if int(i) <= uid < int(i) + int(n)), None)
out["ns"] = {n: os.stat("/proc/self/ns/" + n).st_ino for n in %(namespaces)r}
out["own_proc"] = os.readlink("/proc/self") == str(os.getpid())
out["interfaces"] = [name for _, name in socket.if_nameindex()]
out["env"] = sorted(os.environ)
def attempt(action):
    try:
        action(); return True
    except OSError:
        return False
out["fds"] = [fd for fd in os.listdir("/proc/self/fd") if int(fd) > 2 and attempt(lambda: os.fstat(int(fd)))]
out["read"] = [p for p in sys.argv[2].split(":") if attempt(lambda: open(p, "rb").read(1))]
out["wrote"] = [p for p in sys.argv[3].split(":") if attempt(lambda: open(p + "/" + sys.argv[1], "w").write("x"))]
out["tmp_written"] = attempt(lambda: open("/tmp/probe", "w").write("x"))
out["tmp_bytes"] = os.statvfs("/tmp").f_blocks * os.statvfs("/tmp").f_frsize
def children(count, work, hold_s):
    pids = []
    for _ in range(count):
        try:
            pid = os.fork()
        except OSError:
            break
        if pid == 0:
            held = work(); time.sleep(hold_s); os._exit(0)
        pids.append(pid)
    return pids
def reap(pids, signal=None):
    if signal: [os.kill(p, signal) for p in pids]
    return [os.waitpid(p, 0)[1] for p in pids]
hold = children(%(memory_children)d, lambda: bytearray(b"1") * (%(child_mb)d << 20), 0.2)
out["memory_children_done"] = sum(s == 0 for s in reap(hold))
forks = children(%(processes)d * 2, lambda: None, 5)
out["forked"] = len(forks)
reap(forks, 9)
print(json.dumps(out))
"""


def report(execute: Callable[..., Any]) -> dict[str, Any]:
    """The isolation report: `execute(code, stdin, limits_kwargs, argv)` runs a program in the sandbox."""
    version = bwrap.version()
    if version is None:
        return _refused("bubblewrap (bwrap) is not installed or does not run here (apt-get install bubblewrap)")
    marker = f"rlc-probe-{secrets.token_hex(6)}"
    purelib = sysconfig.get_paths()["purelib"]
    writable = ["/", "/usr", "/dev", purelib, bwrap.PROGRAM_DIR]
    fd, secret = tempfile.mkstemp(prefix="rlc-probe-secret-")  # 0600, the server's own
    try:
        os.write(fd, b"secret")
        os.close(fd)
        result = execute(SCRIPT % {"namespaces": NAMESPACES, "memory_children": MEMORY_CHILDREN,
                                   "child_mb": CHILD_MB, "processes": PROCESSES}, "",
                         dict(time_s=30.0, memory_mb=MEMORY_MB, processes=PROCESSES, tmp_bytes=TMP_BYTES),
                         [marker, f"/etc/shadow:{secret}", ":".join(writable)])
    except (OSError, RuntimeError) as e:  # e.g. setpriv missing, or a cgroup that cannot be made after all
        return _refused(f"{version} could not start a program here: {e}")
    finally:
        os.unlink(secret)
    leaked = [p for p in writable if _remove(Path(p) / marker)]
    try:
        facts = json.loads(result.stdout)
    except ValueError:
        return _refused(f"{version} did not run a program here: {result.stderr.strip()[-500:]}")
    return _evaluate(facts, version, leaked)


def _evaluate(facts: dict[str, Any], version: str, leaked: list[str]) -> dict[str, Any]:
    own = {n: os.stat(f"/proc/self/ns/{n}").st_ino for n in NAMESPACES}
    cgroup_problem = cgroups.unavailable_reason()
    properties = {
        "unprivileged": _host_uid(facts) not in (None, 0),
        "no_capabilities": not any(facts["caps"]) and facts["no_new_privs"],
        "no_new_user_namespaces": not facts["user_namespace_made"],
        "syscall_filter": facts["seccomp"],
        **{f"{n}_namespace": facts["ns"][n] != own[n] for n in NAMESPACES},
        "own_proc": facts["own_proc"],
        "read_only_filesystem": not facts["wrote"] and not leaked,
        "secrets_hidden": not facts["read"],
        "private_tmp": facts["tmp_written"] and 0 < facts["tmp_bytes"] <= TMP_BYTES,
        "clean_environment": set(facts["env"]) <= {*bwrap.ENVIRONMENT, "PWD", "LC_CTYPE"},
        "no_inherited_fds": not facts["fds"],
        "process_limit": facts["forked"] < PROCESSES * 2,
        "total_memory_limit": cgroup_problem is None and facts["memory_children_done"] < MEMORY_CHILDREN,
    }
    properties["net_namespace"] = properties["net_namespace"] and facts["interfaces"] == ["lo"]
    missing = [name for name in REQUIRED if not properties[name]]
    memory = ("a cgroup caps the memory and processes of each run together" if properties["total_memory_limit"]
              else f"RLIMIT_AS caps each process and RLIMIT_NPROC their number, no total cap "
                   f"({cgroup_problem or 'the cgroup did not stop several children'})")
    return {"isolated": not missing, "tool": version, "uid": _host_uid(facts), **properties,
            "memory_limit": memory, "not_isolated": missing}


def _host_uid(facts: dict[str, Any]) -> int | None:
    """The program's uid on the host. Run by root, the program is in no user namespace of its own, so its
    uid_map is the identity and its uid is the host's; run by a user, bwrap's user namespaces (nested, for
    --disable-userns) can map only that user's uid: the kernel allows an unprivileged process no other."""
    return facts["outside_uid"] if bwrap.as_root() else os.getuid()


def _refused(reason: str) -> dict[str, Any]:
    return {"isolated": False, "tool": None, "uid": None, **dict.fromkeys(REQUIRED, False),
            "total_memory_limit": False, "memory_limit": "none", "not_isolated": list(REQUIRED), "reason": reason}


def _remove(path: Path) -> bool:
    try:
        path.unlink()
        return True
    except OSError:
        return False
