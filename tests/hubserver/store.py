"""The loopback Hub's state: repos with a git-like history, and their file contents on disk.

A repo is a set of commits (40-hex shas, each with its parent and the full file table), branches and tags that
point at commits, exactly the shape the Hub API exposes; nothing here speaks HTTP. File contents are stored once,
content-addressed by sha256 under `root/objects/`, written to a temp name then renamed, so a large LFS upload
never sits in memory and a half-written object is never visible.

Whether a file is stored as LFS follows the Hub's rule: the repo's `.gitattributes` says `filter=lfs` for it, or
it is binary (a NUL byte in its first 512 bytes), or it is 10 MiB or larger.
"""

from __future__ import annotations

import fnmatch
import hashlib
import itertools
import os
import re
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO

LFS_THRESHOLD = 10 * 1024 * 1024
# A short version of the .gitattributes the Hub writes into every new repo.
GITATTRIBUTES = "".join(
    f"{pattern} filter=lfs diff=lfs merge=lfs -text\n"
    for pattern in ("*.bin", "*.safetensors", "*.pt", "*.pth", "*.ckpt", "*.h5", "*.msgpack", "*.onnx",
                    "*.parquet", "*.arrow", "*.npy", "*.npz", "*.zip", "*.gz", "*.tar")
).encode()
REPO_TYPES = ("model", "dataset", "space")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}")


class HubStoreError(Exception):
    """A refusal the HTTP layer turns into a status code with the Hub's `X-Error-Code` header."""

    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


@dataclass(frozen=True)
class Blob:
    sha256: str
    size: int
    lfs: bool
    git_oid: str  # of the LFS pointer for LFS files (as on the Hub), else of the content

    @property
    def oid(self) -> str:
        """The id the preupload endpoint reports: what the client compares to skip unchanged files."""
        return self.sha256 if self.lfs else self.git_oid


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass(frozen=True)
class Commit:
    sha: str
    parent: str | None
    title: str
    date: str
    files: Mapping[str, Blob]


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    private: bool = False
    gated: bool = False
    granted: set[str] = field(default_factory=set)  # tokens with access to a gated repo
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    commits: dict[str, Commit] = field(default_factory=dict)

    def resolve(self, revision: str | None) -> Commit:
        """A branch, a tag, `refs/heads/x`, `refs/tags/x`, a full sha, or a unique sha prefix of 4+ characters."""
        rev = revision or "main"
        for prefix, table in (("refs/heads/", self.branches), ("refs/tags/", self.tags)):
            if rev.startswith(prefix) and rev[len(prefix):] in table:
                return self.commits[table[rev[len(prefix):]]]
        sha = self.branches.get(rev) or self.tags.get(rev)
        if sha is None and re.fullmatch(r"[0-9a-f]{4,40}", rev):
            matches = [s for s in self.commits if s.startswith(rev)]
            sha = matches[0] if len(matches) == 1 else None
        if sha is None:
            raise HubStoreError(404, f"Invalid rev id: {rev}", "RevisionNotFound")
        return self.commits[sha]


class Store:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.objects = self.root / "objects"
        self.objects.mkdir(parents=True, exist_ok=True)
        self.repos: dict[tuple[str, str], Repo] = {}
        self._counter = itertools.count()

    # ---- contents ---------------------------------------------------------------------------------------------
    def put_bytes(self, data: bytes) -> str:
        sha = hashlib.sha256(data).hexdigest()
        if not self.has_object(sha):
            self._publish(sha, lambda out: out.write(data))
        return sha

    def put_stream(self, stream: BinaryIO, length: int, expected_sha256: str) -> None:
        """Copy `length` bytes to a temp file while hashing; keep it only if the hash is the one announced."""
        digest = hashlib.sha256()

        def copy(out: BinaryIO) -> None:
            left = length
            while left > 0:
                chunk = stream.read(min(left, 1 << 20))
                if not chunk:
                    raise HubStoreError(400, f"upload ended after {length - left} of {length} bytes")
                digest.update(chunk)
                out.write(chunk)
                left -= len(chunk)
            if digest.hexdigest() != expected_sha256:
                raise HubStoreError(400, f"uploaded content has sha256 {digest.hexdigest()}, not {expected_sha256}")

        self._publish(expected_sha256, copy)

    def _publish(self, sha: str, write) -> None:  # noqa: ANN001 - a callable writing to the open temp file
        fd, tmp = tempfile.mkstemp(dir=self.objects, prefix=".incoming-")
        try:
            with os.fdopen(fd, "wb") as out:
                write(out)
            os.replace(tmp, self.objects / sha)
        except BaseException:
            os.unlink(tmp)
            raise

    def has_object(self, sha256: str) -> bool:
        return (self.objects / sha256).is_file()

    def object_path(self, sha256: str) -> Path:
        return self.objects / sha256

    def read(self, blob: Blob) -> bytes:
        return self.object_path(blob.sha256).read_bytes()

    # ---- repos ------------------------------------------------------------------------------------------------
    def repo(self, repo_type: str, repo_id: str) -> Repo:
        repo = self.repos.get((repo_type, repo_id))
        if repo is None:
            raise HubStoreError(404, "Repository not found", "RepoNotFound")
        return repo

    def create_repo(self, repo_type: str, repo_id: str, private: bool = False) -> Repo:
        check_repo_id(repo_id)
        if repo_type not in REPO_TYPES:
            raise HubStoreError(400, f"invalid repo type {repo_type!r}")
        if (repo_type, repo_id) in self.repos:
            raise HubStoreError(409, f"You already created this {repo_type} repo")
        repo = Repo(repo_type, repo_id, private=private)
        self.repos[(repo_type, repo_id)] = repo
        self._new_commit(repo, "main", None, {".gitattributes": self.blob(GITATTRIBUTES, False)}, "initial commit")
        return repo

    def commit(self, repo: Repo, branch: str, files: Mapping[str, Blob], deletes: Iterable[str] = (),
               title: str = "Upload files", parent: str | None = None) -> Commit:
        if branch not in repo.branches:
            raise HubStoreError(404, f"Invalid rev id: {branch}", "RevisionNotFound")
        head = repo.commits[repo.branches[branch]]
        if parent is not None and parent != head.sha:
            raise HubStoreError(412, f"A commit has happened since {parent}: the branch is at {head.sha}")
        table = dict(head.files)
        for path in deletes:
            removed = [p for p in table if p == path.rstrip("/") or p.startswith(path.rstrip("/") + "/")]
            if not removed:
                raise HubStoreError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
            for p in removed:
                del table[p]
        for path, blob in files.items():
            table[check_path(path)] = blob
        return self._new_commit(repo, branch, head.sha, table, title)

    def blob(self, data: bytes, lfs: bool) -> Blob:
        sha = self.put_bytes(data)
        return self.lfs_blob(sha, len(data)) if lfs else Blob(sha, len(data), False, git_blob_id(data))

    def lfs_blob(self, sha256: str, size: int) -> Blob:
        return Blob(sha256, size, True, git_blob_id(lfs_pointer(sha256, size)))

    def classify(self, repo: Repo, branch: str | None, path: str, data: bytes) -> Blob:
        """Store `data` as LFS or regular, decided the way the Hub's preupload endpoint does."""
        return self.blob(data, self.wants_lfs(repo, branch, path, len(data), data[:512]))

    def wants_lfs(self, repo: Repo, branch: str | None, path: str, size: int, sample: bytes) -> bool:
        if size >= LFS_THRESHOLD or b"\0" in sample:
            return True
        head = repo.commits.get(repo.branches.get(branch or "main", ""))
        attributes = head.files.get(".gitattributes") if head else None
        text = self.read(attributes).decode(errors="replace") if attributes else ""
        name = path.rsplit("/", 1)[-1]
        for line in text.splitlines():
            pattern, *attrs = line.split()
            if "filter=lfs" in attrs and (fnmatch.fnmatch(path, pattern) or fnmatch.fnmatch(name, pattern)):
                return True
        return False

    def create_ref(self, repo: Repo, kind: str, name: str, revision: str | None) -> str:
        table = repo.branches if kind == "branch" else repo.tags
        if not name or name.startswith("refs/") or ".." in name or name.endswith("/"):
            raise HubStoreError(400, f"Invalid {kind} name: {name}")
        if name in table:
            raise HubStoreError(409, f"{kind} {name} already exists")
        table[name] = repo.resolve(revision).sha
        return table[name]

    def _new_commit(self, repo: Repo, branch: str, parent: str | None, files: Mapping[str, Blob],
                    title: str) -> Commit:
        listing = "".join(f"{path}\0{blob.sha256}\n" for path, blob in sorted(files.items()))
        seed = f"{repo.repo_type}/{repo.repo_id}\n{parent}\n{title}\n{next(self._counter)}\n{listing}"
        date = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        commit = Commit(hashlib.sha1(seed.encode()).hexdigest(), parent, title, date, dict(files))
        repo.commits[commit.sha] = commit
        repo.branches[branch] = commit.sha
        return commit


def check_repo_id(repo_id: str) -> str:
    parts = repo_id.split("/")
    if len(parts) != 2 or not all(_NAME.fullmatch(p) and "--" not in p and ".." not in p for p in parts):
        raise HubStoreError(400, f"Invalid repo name {repo_id!r}: expected namespace/name of letters, digits, "
                                 "'-', '_', '.'")
    return repo_id


def check_path(path: str) -> str:
    if not path or path.startswith("/") or any(part in ("", ".", "..") for part in path.split("/")):
        raise HubStoreError(400, f"Invalid path in repo: {path!r}")
    return path
