"""Hostile programs against the real `rlc reward-server` on 127.0.0.1, run by root and by an ordinary user.

Each program tries one escape and prints "denied" when the attempt fails (the test case expects "denied", so a
score of 1.0 means: the program ran, tried, and was stopped) or is bounded by a limit. Independently of what
the programs say, the test checks the world outside the sandbox: the secret files unread (no token reached the
listener), no file written where the program aimed, the server alive, /ping answered within 1 s throughout, and
no process of the run left behind. `test_the_attacks_work_without_the_sandbox` runs the same programs without
the sandbox, to show that they are real attacks that these checks would catch.

Run by root (as CI runs it), the test makes the ordinary user with `useradd`; run by an ordinary user, the
server runs as that user and the root case is skipped. The user made here gets a delegated cgroup,
as systemd gives a user session, and, where the Python interpreter lives under a directory only root may enter
(a pyenv under /root), a mount namespace in which that one directory is visible to it: otherwise no ordinary
user could run this interpreter at all. Neither gives it any privilege.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import rlc
from rlc.reward_server import cgroups
from rlc.reward_server.process import free_port
from rlc.reward_server.sandbox import Limits, _execute

TOKEN = "hf_canary_e3b0c44298fc1c149afbf4c8996fb924"
USER = "rlc-sandbox-test"
TIME_LIMIT_S = 4.0
MEMORY_MB = 256

ATTEMPT = "import ctypes, os, socket\ntry:\n{body}\n    print('escaped')\nexcept OSError:\n    print('denied')\n"
LIBC = "    libc = ctypes.CDLL(None, use_errno=True)\n"
ATTACKS = {
    "read_shadow": "    open('/etc/shadow', 'rb').read()",
    "read_secret_file": "    open({secret!r}, 'rb').read()",
    "write_outside_tmp": "    open({open_dir!r} + '/escaped', 'w').write('x')",
    "write_site_packages": "    open({purelib!r} + '/rlc_hostile.pth', 'w').write('import os')",
    "read_server_environ": "    if b'HF_TOKEN' not in open('/proc/{pid}/environ', 'rb').read():\n"
                           "        raise OSError('not the server')",
    "setns_server_network": LIBC + "    fd = os.open('/proc/{pid}/ns/net', os.O_RDONLY)\n"
                            "    if libc.setns(fd, 0) != 0:\n        raise OSError(ctypes.get_errno(), 'setns')\n"
                            "    socket.create_connection(('127.0.0.1', {port}), timeout=1).sendall(b'setns')",
    "connect_loopback_listener": "    socket.create_connection(('127.0.0.1', {port}), timeout=1).sendall(b'hi')",
    "write_server_memory": "    with open('/proc/{pid}/mem', 'r+b') as mem:\n        mem.seek(4096)\n"
                           "        mem.write(b'x')",
    "ptrace_server": LIBC + "    if libc.ptrace(16, {pid}, 0, 0) != 0:\n"
                     "        raise OSError(ctypes.get_errno(), 'ptrace')",
    "user_namespace_tmpfs": LIBC + "    if libc.unshare(0x10000000 | 0x20000) != 0:  # CLONE_NEWUSER | CLONE_NEWNS\n"
                            "        raise OSError(ctypes.get_errno(), 'unshare')\n"
                            "    if libc.mount(b'none', b'/tmp', b'tmpfs', 0, None) != 0:\n"
                            "        raise OSError(ctypes.get_errno(), 'mount')",
    "proc_root_of_init": "    os.listdir('/proc/1/root/root')\n    open('/proc/1/root/etc/shadow', 'rb').read()",
}
# Bounded, not denied: each prints "bounded" when the limit stopped it.
BOUNDED = {
    "disk_fill": "written = 0\nfor where in ('/tmp', '/dev/shm'):\n    try:\n        for i in range(200):\n"
                 "            with open(f'{{where}}/fill{{i}}', 'wb') as f:\n"
                 "                f.write(b'x' * (1 << 20))\n            written += 1\n    except OSError:\n"
                 "        pass\nprint('bounded' if written < 150 else 'escaped')",  # 200 MB wanted, 2 x 64 MiB let
    "memory_via_children": "import os, time\npids = []\nfor _ in range(4):\n    pid = os.fork()\n"
                           "    if pid == 0:\n        x = bytearray(b'1') * (120 << 20)\n        time.sleep(0.5)\n"
                           "        os._exit(0)\n    pids.append(pid)\n"
                           "held = sum(os.waitpid(p, 0)[1] == 0 for p in pids)\n"
                           f"print('bounded' if held * 120 <= {MEMORY_MB} else 'escaped')",
}
# Run to the time limit: scored 0.0; what counts is what they leave behind.
ENDLESS = {
    "fork_bomb": "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass",
    "orphan_after_timeout": "import os\nif os.fork() == 0:\n    os.setsid()\n"
                            "    os.execv('/usr/bin/sleep', ['sleep', '987.654'])\nwhile True:\n    pass",
}


class Listener:
    """A TCP listener on 127.0.0.1 that records every connection it gets."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.received: list[bytes] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = self.sock.accept()
                with conn:
                    conn.settimeout(1)
                    with contextlib.suppress(OSError):
                        self.received.append(conn.recv(1024) or b"(connected)")


class PingWatch:
    """GET /ping every 50 ms in a thread; the slowest answer (a failure counts as infinitely slow)."""

    def __init__(self, url: str) -> None:
        self.url, self.slowest, self.stop = url, 0.0, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=5) as client:
            while not self.stop.is_set():
                start = time.monotonic()
                try:
                    ok = client.get(f"{self.url}/ping").status_code == 200
                except httpx.HTTPError:
                    ok = False
                self.slowest = max(self.slowest, time.monotonic() - start if ok else float("inf"))
                time.sleep(0.05)

    def __enter__(self) -> PingWatch:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _ensure_user() -> pwd.struct_passwd:
    with contextlib.suppress(KeyError):
        return pwd.getpwnam(USER)
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", USER], check=True)
    return pwd.getpwnam(USER)


def _hidden_ancestor(path: str) -> Path | None:
    """The outermost directory above `path` that others may not enter, if any."""
    for parent in reversed(Path(path).parents):
        if not parent.stat().st_mode & 0o001:
            return parent
    return None


def _as_user(user: pwd.struct_passwd, command: list[str], cgroup_procs: list[str]) -> list[str]:
    """`command` run as `user` (no capabilities), joined to delegated cgroups, seeing the interpreter."""
    drop = ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups", "--inh-caps=-all",
            "--", *command]
    join = 'for f in "$@"; do case $f in --) break;; esac; echo $$ > "$f"; shift; done; shift; exec "$@"'
    prefix = ["sh", "-c", join, "sh", *cgroup_procs, "--"]
    hidden = _hidden_ancestor(sys.base_prefix)
    if hidden is None:
        return [*prefix, *drop]
    # A private mount namespace: a bare tmpfs over the hidden directory, with only the interpreter bound back.
    reveal = ('set -e; keep=$(mktemp -d); mount --bind "$2" "$keep"; mount -t tmpfs -o mode=0755,size=1m tmpfs '
              '"$1"; mkdir -p "$2"; mount --bind "$keep" "$2"; umount -l "$keep"; rmdir "$keep"; shift 2; '
              'exec "$@"')
    return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", reveal, "sh", str(hidden),
            sys.base_prefix, *prefix, *drop]


@contextlib.contextmanager
def _delegated_cgroups(user: pwd.struct_passwd) -> Iterator[list[str]]:
    """cgroup.procs files of cgroups made for `user` (as systemd delegates one to a user session), if possible."""
    made = []
    if cgroups.unavailable_reason() is None:
        for parent in cgroups.server_cgroups():
            directory = parent / f"rlc-test-{os.getpid()}"
            directory.mkdir()
            made.append(directory)
            for path in [directory, *directory.iterdir()]:
                os.chown(path, user.pw_uid, user.pw_gid)
    try:
        yield [str(d / "cgroup.procs") for d in made]
    finally:
        for directory in made:
            for _ in range(200):
                with contextlib.suppress(OSError):
                    directory.rmdir()
                    break
                time.sleep(0.05)


class Server:
    def __init__(self, proc: subprocess.Popen, port: int, secret: Path, open_dir: Path, log: Path) -> None:
        self.proc, self.port, self.secret, self.open_dir, self.log = proc, port, secret, open_dir, log
        self.url = f"http://127.0.0.1:{port}"
        self.user: pwd.struct_passwd | None = None
        self.cgroups = False  # whether the server was given cgroups it can make the runs' cgroups in

    def wait_ready(self) -> dict:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()
            with contextlib.suppress(httpx.HTTPError):
                return httpx.get(f"{self.url}/ping", timeout=1).json()
            time.sleep(0.1)
        raise AssertionError(f"no /ping within 60 s:\n{self.log.read_text()}")


@pytest.fixture(scope="module", params=["root", "ordinary_user", "ordinary_user_without_cgroups"])
def server(request: pytest.FixtureRequest) -> Iterator[Server]:
    if request.param != "ordinary_user" and os.getuid() != 0:
        pytest.skip("run by an ordinary user: the server runs only as that user (CI runs this as root)")
    # Straight under /tmp, which anyone may enter: only the sandbox keeps programs from these files, not a 0700
    # directory above them (pytest's tmp_path has one).
    work = Path(tempfile.mkdtemp(prefix="rlc-hostile-"))
    work.chmod(0o755)
    open_dir = work / "open"  # writable by anyone: only the sandbox's mount namespace keeps programs out
    open_dir.mkdir(mode=0o777)
    open_dir.chmod(0o777)
    secret, log = work / "secret", work / "server.log"
    secret.write_text(TOKEN)
    secret.chmod(0o600)
    log.touch(mode=0o666)
    port = free_port()
    root = str(Path(rlc.__file__).resolve().parents[1])
    env = {"PATH": os.environ.get("PATH", os.defpath), "PYTHONPATH": root, "HF_TOKEN": TOKEN}
    command = [sys.executable, "-c", "from rlc.cli import main; main()", "reward-server", "--port", str(port),
               "--code-time-limit", str(TIME_LIMIT_S), "--code-memory-mb", str(MEMORY_MB)]
    user = None if request.param == "root" else pwd.getpwuid(os.getuid())
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, work, ignore_errors=True)
        if user is not None and os.getuid() == 0:
            user = _ensure_user()
            os.chown(secret, user.pw_uid, user.pw_gid)
            delegated = stack.enter_context(_delegated_cgroups(user)) if request.param == "ordinary_user" else []
            command = _as_user(user, command, delegated)
        with open(log, "ab") as out:
            proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        server = Server(proc, port, secret, open_dir, log)
        server.user = user
        server.cgroups = cgroups.unavailable_reason() is None and request.param != "ordinary_user_without_cgroups"
        try:
            server.ping = server.wait_ready()
            yield server
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, 15)
            proc.wait(timeout=30)


def _program(template: str, server: Server, listener: Listener) -> str:
    return template.format(secret=str(server.secret), open_dir=str(server.open_dir), pid=server.proc.pid,
                           port=listener.port, purelib=sysconfig.get_paths()["purelib"])


def _score(server: Server, program: str, expected: str) -> float:
    info = {"type": "code_verifiable", "answer": {"test_cases": [{"input": "", "output": expected}]}}
    body = {"llm_output": f"```python\n{program}\n```", "verification_info": json.dumps(info)}
    response = httpx.post(f"{server.url}/reward", json=body, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()["score"]


def test_the_server_reports_full_isolation(server: Server):
    report = server.ping["isolation"]
    assert report["isolated"] and report["not_isolated"] == [], report
    assert report["uid"] == (65534 if server.user is None else server.user.pw_uid)
    assert report["total_memory_limit"] is server.cgroups
    if not server.cgroups:  # the fallback, said in words
        assert report["memory_limit"].startswith("RLIMIT_AS caps each process and RLIMIT_NPROC their number")
    assert server.ping["network_isolation"] is True


def test_hostile_programs_are_denied_or_bounded_and_change_nothing_outside(server: Server):
    listener = Listener()
    purelib = Path(sysconfig.get_paths()["purelib"])
    site_before = sorted(os.listdir(purelib))
    scores: dict[str, float] = {}
    with PingWatch(server.url) as ping:
        for name, body in ATTACKS.items():
            scores[name] = _score(server, ATTEMPT.format(body=_program(body, server, listener)), "denied")
        for name, program in BOUNDED.items():
            scores[name] = _score(server, _program(program, server, listener), "bounded")
        for name, program in ENDLESS.items():
            start = time.monotonic()
            scores[name] = _score(server, program, "never")
            assert time.monotonic() - start < TIME_LIMIT_S + 3, name
    expected = dict.fromkeys([*ATTACKS, *BOUNDED], 1.0) | dict.fromkeys(ENDLESS, 0.0)
    if not server.cgroups:  # as /ping says: RLIMIT_AS per process only, so several children hold more
        expected["memory_via_children"] = 0.0
    assert scores == expected, \
        server.log.read_text()[-3000:]
    assert ping.slowest < 1.0, ping.slowest
    assert listener.received == []
    assert sorted(os.listdir(purelib)) == site_before
    assert list(server.open_dir.iterdir()) == []
    assert server.secret.read_text() == TOKEN
    assert server.proc.poll() is None
    _assert_nothing_left(server)


def _assert_nothing_left(server: Server) -> None:
    """Only the server's own processes remain: no program, fork-bomb child or orphan of any run."""
    deadline = time.monotonic() + 5
    while (left := _leftovers(server)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert left == []


def _leftovers(server: Server) -> list[str]:
    left = []
    for pid in _descendants(server.proc.pid):
        with contextlib.suppress(OSError):
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if "bwrap" in cmdline or "987.654" in cmdline or "/program/main.py" in cmdline:
                left.append(cmdline)
    return left


def test_the_attacks_work_without_the_sandbox(tmp_path: Path):
    """The control: run unsandboxed, the same programs do read the secret and reach the listener, so the checks
    above would see an escape."""
    listener = Listener()
    secret, open_dir = tmp_path / "secret", tmp_path / "open"
    secret.write_text(TOKEN)
    secret.chmod(0o600)
    open_dir.mkdir()
    holder = subprocess.Popen(["sleep", "30"], env={"HF_TOKEN": TOKEN})  # stands in for the server's process
    fake = Server(holder, 0, secret, open_dir, tmp_path / "log")
    try:
        for name in ("read_secret_file", "write_outside_tmp", "read_server_environ", "connect_loopback_listener"):
            program = ATTEMPT.format(body=_program(ATTACKS[name], fake, listener))
            result = _execute(program, "", Limits(time_s=10), [], isolated=False)
            assert result.stdout.strip() == "escaped", (name, result)
    finally:
        holder.kill()
        holder.wait()
    assert (open_dir / "escaped").exists()
    deadline = time.monotonic() + 2
    while not listener.received and time.monotonic() < deadline:
        time.sleep(0.02)
    assert listener.received == [b"hi"]
    shutil.rmtree(open_dir)
