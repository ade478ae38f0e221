"""Which filesystem a path is on, from the kernel's mount table (`/proc/self/mountinfo`), and whether other nodes
of a cluster can see it.

The answer goes by filesystem type alone: network and cluster filesystems (NFS, Lustre, GPFS, BeeGFS, CephFS,
FUSE filesystems such as JuiceFS or sshfs) are seen by every node that mounts them, and a RAM or disk filesystem
(tmpfs, ext4, xfs, overlay) belongs to one machine. A type in neither list is "unknown": rlc does not guess.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

MOUNTINFO = Path("/proc/self/mountinfo")
Sharing = Literal["shared", "memory", "local", "unknown"]

SHARED = {"nfs", "nfs4", "lustre", "gpfs", "beegfs", "ceph", "cephfs", "glusterfs", "cifs", "smb3", "smbfs",
          "wekafs", "panfs", "orangefs", "pvfs2", "afs", "ocfs2", "gfs2"}
MEMORY = {"tmpfs", "ramfs"}  # this machine's memory: certainly invisible to any other node
LOCAL = {"ext2", "ext3", "ext4", "xfs", "btrfs", "zfs", "f2fs", "bcachefs", "jfs", "reiserfs", "vfat", "exfat",
         "ntfs", "ntfs3", "overlay", "aufs", "squashfs", "devtmpfs", "fuse.fuse-overlayfs"}


@dataclass(frozen=True)
class Mount:
    point: str  # where it is mounted, unescaped
    fstype: str  # with its FUSE subtype, as the kernel writes it: `fuse.sshfs`


def parse_mountinfo(text: str) -> list[Mount]:
    """The mounts of a mountinfo table, in its order (a later mount on the same point hides an earlier one).

    A line is `ID PARENT MAJ:MIN ROOT POINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTIONS`; the optional
    fields vary in number, so the type is the first field after the lone `-`."""
    mounts = []
    for line in text.splitlines():
        fields = line.split()
        if "-" not in fields[6:] or len(fields) < 5:
            continue
        dash = fields.index("-", 6)
        if dash + 1 < len(fields):
            mounts.append(Mount(_unescape(fields[4]), fields[dash + 1]))
    return mounts


def _unescape(field: str) -> str:
    """The kernel writes space, tab, newline and backslash in paths as octal escapes (`\\040`)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mount_of(path: Path, mounts: list[Mount]) -> Mount | None:
    """The mount that holds `path` (absolute, symlinks resolved): the last one of the longest matching point."""
    best: Mount | None = None
    for mount in mounts:
        point = mount.point.rstrip("/") or "/"
        inside = str(path) == point or str(path).startswith(point if point == "/" else point + "/")
        if inside and (best is None or len(point) >= len(best.point.rstrip("/") or "/")):
            best = mount
    return best


def sharing(fstype: str) -> Sharing:
    if fstype in MEMORY:
        return "memory"
    if fstype in LOCAL:
        return "local"
    if fstype in SHARED or fstype.startswith("fuse."):  # FUSE filesystems in clusters are network filesystems
        return "shared"
    return "unknown"


def filesystem_of(path: Path, mountinfo: Path = MOUNTINFO) -> Mount | None:
    """The mount holding `path`, or its nearest existing parent (a run directory not made yet); None where the
    table cannot be read (not Linux)."""
    try:
        text = mountinfo.read_text()
    except OSError:
        return None
    existing = next((p for p in (path, *path.parents) if p.exists()), Path("/"))
    return mount_of(Path(os.path.realpath(existing)), parse_mountinfo(text))
