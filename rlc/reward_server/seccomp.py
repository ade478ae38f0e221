"""A seccomp filter for submitted programs, compiled by libseccomp (Debian's libseccomp2, which apt itself needs)
and handed to bwrap (`--seccomp FD`).

Design decisions, and why:
- It closes what namespaces and uid leave open. Above all new user namespaces: a program run as `nobody` could
  otherwise make one, be root in it with every capability there, and mount a tmpfs past the size cap of its
  /tmp or reach kernel code that only such a root can (the usual way from a local bug to an escape). Also the
  kernel interfaces a test program never needs and exploits often do: keyrings (not namespaced), ptrace,
  userfaultfd, perf events, bpf, io_uring.
- clone3 answers ENOSYS rather than being inspected (its flags live in memory a filter cannot read): the C
  library then falls back to clone, whose flags the filter can check. Everything else is allowed, as in
  Flatpak's filter, since programs must run ordinary code unchanged.
- libseccomp through ctypes, rather than BPF written by hand: it knows each architecture's syscall numbers and
  the checks that keep a filter from being bypassed through another ABI.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import functools
import os

CLONE_NEWUSER = 0x10000000
_ALLOW = 0x7FFF0000
_MASKED_EQ = 7
_DENIED = ("ptrace", "keyctl", "add_key", "request_key", "userfaultfd", "perf_event_open", "bpf",
           "io_uring_setup", "io_uring_enter", "io_uring_register", "kexec_load", "init_module", "finit_module")


class _ArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("datum_a", ctypes.c_uint64),
                ("datum_b", ctypes.c_uint64)]


def _errno_action(code: int) -> int:
    return 0x00050000 | (code & 0xFFFF)


@functools.cache
def program() -> bytes | None:
    """The compiled filter (BPF), or None where libseccomp is not installed."""
    name = ctypes.util.find_library("seccomp")
    if name is None:
        return None
    lib = ctypes.CDLL(name)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint,
                                           ctypes.POINTER(_ArgCmp)]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    context = lib.seccomp_init(_ALLOW)
    if not context:
        return None
    try:
        return _compile(lib, context)
    finally:
        lib.seccomp_release(context)


def _compile(lib: ctypes.CDLL, context: int) -> bytes | None:
    def rule(action: int, syscall: str, *checks: _ArgCmp) -> bool:
        number = lib.seccomp_syscall_resolve_name(syscall.encode())
        if number < 0:  # not a syscall of this architecture
            return True
        array = (_ArgCmp * len(checks))(*checks) if checks else None
        return lib.seccomp_rule_add_array(context, action, number, len(checks), array) == 0

    new_user = _ArgCmp(0, _MASKED_EQ, CLONE_NEWUSER, CLONE_NEWUSER)  # (arg0 & CLONE_NEWUSER) == CLONE_NEWUSER
    added = [rule(_errno_action(errno.EPERM), "clone", new_user),
             rule(_errno_action(errno.EPERM), "unshare", new_user), rule(_errno_action(errno.ENOSYS), "clone3"),
             *(rule(_errno_action(errno.EPERM), name) for name in _DENIED)]
    if not all(added):
        return None
    read, write = os.pipe()
    try:
        if lib.seccomp_export_bpf(context, write) != 0:
            return None
        os.close(write)
        write = -1
        return os.read(read, 1 << 20)
    finally:
        os.close(read)
        if write >= 0:
            os.close(write)
