"""The Hub HTTP API, as much of it as huggingface_hub's download, info, refs and upload calls use.

Each handler takes the request and the URL's named groups, checks access the way the Hub does, and returns a
`Reply`; refusals are `HubStoreError`s that the server turns into the Hub's `X-Error-Code` / `X-Error-Message`
headers, because huggingface_hub picks its exception class (RepositoryNotFoundError, RevisionNotFoundError,
GatedRepoError, EntryNotFoundError) from those headers, not from the status code.

Access, as on the Hub: a missing repo and a private one asked for without a token look the same (401
RepoNotFound without a token, 404 with one); an unknown token is 401 "Invalid credentials"; a gated repo's files
need a token that was granted access (401 GatedRepo without a token, 403 with a token lacking it); writes need a
token with write rights (401 without a token, 403 with a read-only one). Any valid token reads any private repo:
the loopback Hub has no organisations.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from .store import Commit, HubStoreError, Repo, lfs_pointer

if TYPE_CHECKING:
    from .server import HubServer, _Handler

T = r"(?P<type>models|datasets|spaces)"
R = r"(?P<repo>[^/]+/[^/]+)"
REV = r"(?P<rev>[^/]+)"
PREFIX = r"(?:(?P<prefix>datasets|spaces)/)?"


@dataclass
class Reply:
    status: int = 200
    body: bytes | Path | None = None
    headers: dict[str, str] = field(default_factory=dict)


def json_reply(obj: Any, status: int = 200, content_type: str = "application/json") -> Reply:
    return Reply(status, json.dumps(obj).encode(), {"Content-Type": content_type})


class Api:
    """Route handlers; `self.hub` holds the store, tokens and the lock (taken by the server around each call)."""

    def __init__(self, hub: HubServer) -> None:
        self.hub = hub
        self.tickets: dict[str, tuple[str, int]] = {}  # LFS oid -> (one-time upload secret, size)

    # ---- access -----------------------------------------------------------------------------------------------
    def token(self, req: _Handler) -> str | None:
        header = req.headers.get("Authorization", "")
        token = header[7:].strip() if header.lower().startswith("bearer ") else None
        if token and token not in self.hub.tokens:
            raise HubStoreError(401, "Invalid credentials in Authorization header")
        return token or None

    def readable(self, req: _Handler, repo_type: str, repo_id: str) -> Repo:
        token = self.token(req)
        repo = self.hub.store.repos.get((repo_type, repo_id))
        if repo is None or (repo.private and token is None):
            raise HubStoreError(404 if token else 401, "Repository not found", "RepoNotFound")
        return repo

    def writable(self, req: _Handler, repo_type: str, repo_id: str) -> Repo:
        self.writer(req)
        return self.readable(req, repo_type, repo_id)

    def writer(self, req: _Handler) -> str:
        token = self.token(req)
        if token is None:
            raise HubStoreError(401, "You must be authenticated to write (no token was sent)")
        if not self.hub.tokens[token].write:
            raise HubStoreError(403, "You don't have the rights to write to this repo (read-only token)")
        return token

    def gate(self, req: _Handler, repo: Repo) -> None:
        token = self.token(req)
        if repo.gated and token not in repo.granted:
            raise HubStoreError(403 if token else 401, f"Access to {repo.repo_id} is restricted", "GatedRepo")

    # ---- reading ----------------------------------------------------------------------------------------------
    def info(self, req: _Handler, type: str, repo: str, rev: str | None = None) -> Reply:
        found = self.readable(req, type[:-1], repo)
        commit = found.resolve(rev)
        first = min(found.commits.values(), key=lambda c: c.date)
        body = {"_id": hashlib.sha1(repo.encode()).hexdigest()[:24], "id": repo, "author": repo.split("/")[0],
                "sha": commit.sha, "lastModified": commit.date, "createdAt": first.date,
                "private": found.private, "gated": "manual" if found.gated else False, "disabled": False,
                "downloads": 0, "likes": 0, "tags": [], "siblings": [_sibling(p, b) for p, b in commit.files.items()]}
        if type == "models":
            body["modelId"] = repo
        return json_reply(body)

    def refs(self, req: _Handler, type: str, repo: str) -> Reply:
        found = self.readable(req, type[:-1], repo)

        def listing(table: dict[str, str], kind: str) -> list[dict[str, str]]:
            return [{"name": n, "ref": f"refs/{kind}/{n}", "targetCommit": s} for n, s in sorted(table.items())]

        return json_reply({"branches": listing(found.branches, "heads"), "tags": listing(found.tags, "tags"),
                           "converts": [], "pullRequests": []})

    def tree(self, req: _Handler, type: str, repo: str, rev: str, path: str = "") -> Reply:
        commit = self.readable(req, type[:-1], repo).resolve(rev)
        recursive = req.query.get("recursive", ["false"])[0].lower() in ("true", "1")
        base = path.strip("/")
        entries = [e for e in _entries(commit) if _inside(e["path"], base, recursive)]
        if base and not entries:
            raise HubStoreError(404, f"{base} does not exist at {commit.sha}", "EntryNotFound")
        return json_reply(entries)

    def paths_info(self, req: _Handler, type: str, repo: str, rev: str) -> Reply:
        commit = self.readable(req, type[:-1], repo).resolve(rev)
        wanted = set(parse_qs(req.body().decode()).get("paths", []))
        return json_reply([e for e in _entries(commit) if e["path"] in wanted])

    def commits(self, req: _Handler, type: str, repo: str, rev: str) -> Reply:
        found = self.readable(req, type[:-1], repo)
        commit: Commit | None = found.resolve(rev)
        history = []
        while commit is not None:
            history.append({"id": commit.sha, "authors": [{"user": "loopback"}], "date": commit.date,
                            "title": commit.title, "message": commit.title})
            commit = found.commits.get(commit.parent or "")
        return json_reply(history)

    def auth_check(self, req: _Handler, type: str, repo: str) -> Reply:
        found = self.writable(req, type[:-1], repo) if req.url_path.endswith("/write") \
            else self.readable(req, type[:-1], repo)
        self.gate(req, found)
        return json_reply({})

    def resolve(self, req: _Handler, repo: str, rev: str, path: str, prefix: str | None = None) -> Reply:
        found = self.readable(req, (prefix or "models")[:-1], repo)
        self.gate(req, found)
        commit = found.resolve(rev)
        blob = commit.files.get(path)
        if blob is None:
            reply = Reply(404, b'{"error": "Entry not found"}',
                          {"X-Error-Code": "EntryNotFound", "X-Error-Message": "Entry not found"})
        else:
            reply = Reply(200, self.hub.store.object_path(blob.sha256),
                          {"ETag": f'"{blob.sha256 if blob.lfs else blob.git_oid}"',
                           "Content-Type": "application/octet-stream", "Content-Length": str(blob.size)})
        reply.headers["X-Repo-Commit"] = commit.sha
        return reply

    def whoami(self, req: _Handler) -> Reply:
        token = self.token(req)
        if token is None:
            raise HubStoreError(401, "Invalid username or password.")
        ident = self.hub.tokens[token]
        role = "write" if ident.write else "read"
        return json_reply({"type": "user", "name": ident.user, "fullname": ident.user, "orgs": [],
                           "auth": {"type": "access_token", "accessToken": {"displayName": "loopback", "role": role}}})

    def agent_harnesses(self, req: _Handler) -> Reply:
        return json_reply({"standardEnvVars": [], "harnesses": {}})  # huggingface_hub asks once a day

    # ---- writing ----------------------------------------------------------------------------------------------
    def validate_yaml(self, req: _Handler) -> Reply:
        return json_reply({"errors": [], "warnings": []})

    def create_repo(self, req: _Handler) -> Reply:
        user = self.hub.tokens[self.writer(req)].user
        body = req.json()
        repo_type = body.get("type") or "model"
        repo_id = f"{body.get('organization') or user}/{body.get('name', '')}"
        private = body.get("visibility") == "private" or bool(body.get("private"))
        url = self.hub.repo_url(repo_type, repo_id)
        try:
            self.hub.store.create_repo(repo_type, repo_id, private=private)
        except HubStoreError as err:
            if err.status != 409:
                raise
            reply = json_reply({"error": err.message, "url": url}, status=409)  # exist_ok reads the url from it
            reply.headers["X-Error-Message"] = err.message
            return reply
        return json_reply({"url": url, "name": repo_id, "id": repo_id})

    def delete_repo(self, req: _Handler) -> Reply:
        self.writer(req)
        body = req.json()
        repo_type, repo_id = body.get("type") or "model", f"{body.get('organization')}/{body.get('name')}"
        self.readable(req, repo_type, repo_id)
        del self.hub.store.repos[(repo_type, repo_id)]
        return json_reply({})

    def settings(self, req: _Handler, type: str, repo: str) -> Reply:
        found = self.writable(req, type[:-1], repo)
        body = req.json()
        if "visibility" in body or "private" in body:
            found.private = body.get("visibility") == "private" or body.get("private") is True
        if "gated" in body:
            found.gated = body["gated"] not in (False, None)
        return json_reply({})

    def preupload(self, req: _Handler, type: str, repo: str, rev: str) -> Reply:
        found = self.writable(req, type[:-1], repo)
        if req.query.get("create_pr"):
            raise HubStoreError(400, "pull requests are not supported by the loopback Hub")
        head = _branch_head(found, rev)
        answers = []
        for item in req.json()["files"]:
            sample = base64.b64decode(item["sample"])
            lfs = self.hub.store.wants_lfs(found, rev, item["path"], int(item["size"]), sample)
            existing = head.files.get(item["path"])
            answers.append({"path": item["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False,
                            "oid": existing.oid if existing else None})
        return json_reply({"files": answers, "commitOid": head.sha})

    def lfs_batch(self, req: _Handler, repo: str, prefix: str | None = None) -> Reply:
        self.writable(req, (prefix or "models")[:-1], repo)
        body = req.json()
        if body.get("operation") != "upload":
            raise HubStoreError(400, "the loopback Hub's LFS batch API only uploads (downloads use /resolve)")
        answers = []
        for obj in body.get("objects", []):
            oid, size = str(obj.get("oid")), int(obj.get("size", -1))
            if not re.fullmatch(r"[0-9a-f]{64}", oid) or size < 0:
                answers.append({"oid": oid, "size": size, "error": {"code": 422, "message": "invalid oid or size"}})
            elif self.hub.store.has_object(oid):
                answers.append({"oid": oid, "size": size})  # no actions: the client skips the upload
            else:
                secret = secrets.token_hex(16)
                self.tickets[oid] = (secret, size)
                href = f"{self.hub.url}/_lfs/{oid}"
                answers.append({"oid": oid, "size": size, "authenticated": True, "actions": {
                    "upload": {"href": f"{href}?ticket={secret}", "header": {}},
                    "verify": {"href": f"{href}/verify", "header": {}}}})
        return json_reply({"transfer": "basic", "objects": answers, "hash_algo": "sha256"},
                          content_type="application/vnd.git-lfs+json")

    def lfs_ticket(self, req: _Handler, oid: str) -> int:
        """Check the one-time secret of a PUT (the upload URL carries no token, like S3's presigned URLs)."""
        secret, size = self.tickets.get(oid, (None, 0))
        if secret is None or req.query.get("ticket", [""])[0] != secret:
            raise HubStoreError(403, "no LFS upload was announced for this object (or its ticket was used)")
        return size

    def lfs_verify(self, req: _Handler, oid: str) -> Reply:
        self.writer(req)
        size = int(req.json().get("size", -1))
        path = self.hub.store.object_path(oid)
        if not path.is_file() or path.stat().st_size != size:
            raise HubStoreError(404, f"LFS object {oid} of size {size} was not uploaded")
        return json_reply({})

    def commit(self, req: _Handler, type: str, repo: str, rev: str) -> Reply:
        found = self.writable(req, type[:-1], repo)
        if req.query.get("create_pr"):
            raise HubStoreError(400, "pull requests are not supported by the loopback Hub")
        _branch_head(found, rev)
        header: dict[str, Any] = {}
        files, deletes = {}, []
        store = self.hub.store
        for line in req.body().splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "header":
                header = value
            elif key == "file":
                files[value["path"]] = store.blob(base64.b64decode(value["content"]), lfs=False)
            elif key == "lfsFile":
                path = store.object_path(value["oid"])
                if not path.is_file() or value.get("size", path.stat().st_size) != path.stat().st_size:
                    raise HubStoreError(422, f"LFS object {value['oid']} for {value['path']} was never uploaded")
                files[value["path"]] = store.lfs_blob(value["oid"], path.stat().st_size)
            elif key in ("deletedFile", "deletedFolder"):
                deletes.append(value["path"])
            else:
                raise HubStoreError(400, f"unknown commit operation {key!r}")
        commit = store.commit(found, rev, files, deletes, header.get("summary") or "Upload files",
                              parent=header.get("parentCommit"))
        url = f"{self.hub.repo_url(found.repo_type, found.repo_id)}/commit/{commit.sha}"
        return json_reply({"success": True, "commitOid": commit.sha, "commitUrl": url, "pullRequestUrl": None})

    def create_branch(self, req: _Handler, type: str, repo: str, rev: str) -> Reply:
        found = self.writable(req, type[:-1], repo)
        self.hub.store.create_ref(found, "branch", rev, req.json().get("startingPoint"))
        return json_reply({})

    def delete_branch(self, req: _Handler, type: str, repo: str, rev: str) -> Reply:
        found = self.writable(req, type[:-1], repo)
        _branch_head(found, rev)
        del found.branches[rev]
        return json_reply({})

    def create_tag(self, req: _Handler, type: str, repo: str, rev: str) -> Reply:
        found = self.writable(req, type[:-1], repo)
        self.hub.store.create_ref(found, "tag", str(req.json().get("tag", "")), rev)
        return json_reply({})

    def delete_tag(self, req: _Handler, type: str, repo: str, rev: str) -> Reply:
        found = self.writable(req, type[:-1], repo)
        if found.tags.pop(rev, None) is None:
            raise HubStoreError(404, f"Invalid rev id: {rev}", "RevisionNotFound")
        return json_reply({})


ROUTES: list[tuple[str, re.Pattern[str], str]] = [(method, re.compile(pattern), name) for method, pattern, name in [
    ("GET", rf"/api/{T}/{R}", "info"),
    ("GET", rf"/api/{T}/{R}/revision/{REV}", "info"),
    ("GET", rf"/api/{T}/{R}/refs", "refs"),
    ("GET", rf"/api/{T}/{R}/tree/{REV}(?:/(?P<path>.*))?", "tree"),
    ("POST", rf"/api/{T}/{R}/paths-info/{REV}", "paths_info"),
    ("GET", rf"/api/{T}/{R}/commits/{REV}", "commits"),
    ("GET", rf"/api/{T}/{R}/auth-check(?:/write)?", "auth_check"),
    ("HEAD", rf"/{PREFIX}{R}/resolve/{REV}/(?P<path>.+)", "resolve"),
    ("GET", rf"/{PREFIX}{R}/resolve/{REV}/(?P<path>.+)", "resolve"),
    ("GET", r"/api/whoami-v2", "whoami"),
    ("GET", r"/api/agent-harnesses", "agent_harnesses"),
    ("POST", r"/api/validate-yaml", "validate_yaml"),
    ("POST", r"/api/repos/create", "create_repo"),
    ("DELETE", r"/api/repos/delete", "delete_repo"),
    ("PUT", rf"/api/{T}/{R}/settings", "settings"),
    ("POST", rf"/api/{T}/{R}/preupload/{REV}", "preupload"),
    ("POST", rf"/{PREFIX}{R}\.git/info/lfs/objects/batch", "lfs_batch"),
    ("PUT", r"/_lfs/(?P<oid>[0-9a-f]{64})", "lfs_put"),  # streamed by the server itself, outside the lock
    ("POST", r"/_lfs/(?P<oid>[0-9a-f]{64})/verify", "lfs_verify"),
    ("POST", rf"/api/{T}/{R}/commit/{REV}", "commit"),
    ("POST", rf"/api/{T}/{R}/branch/{REV}", "create_branch"),
    ("DELETE", rf"/api/{T}/{R}/branch/{REV}", "delete_branch"),
    ("POST", rf"/api/{T}/{R}/tag/{REV}", "create_tag"),
    ("DELETE", rf"/api/{T}/{R}/tag/{REV}", "delete_tag"),
]]


def _branch_head(repo: Repo, branch: str) -> Commit:
    if branch not in repo.branches:
        raise HubStoreError(404, f"Invalid rev id: {branch} (commits go to a branch)", "RevisionNotFound")
    return repo.commits[repo.branches[branch]]


def _sibling(path: str, blob: Any) -> dict[str, Any]:
    entry = {"rfilename": path, "size": blob.size, "blobId": blob.git_oid}
    if blob.lfs:
        entry["lfs"] = {"size": blob.size, "sha256": blob.sha256,
                        "pointerSize": len(lfs_pointer(blob.sha256, blob.size))}
    return entry


def _entries(commit: Commit) -> list[dict[str, Any]]:
    """Files and the folders they imply, in the /tree and /paths-info shape."""
    folders = sorted({"/".join(p.split("/")[:i]) for p in commit.files for i in range(1, p.count("/") + 1)})
    entries: list[dict[str, Any]] = [
        {"type": "directory", "oid": hashlib.sha1(f"{commit.sha}/{d}".encode()).hexdigest(), "size": 0, "path": d}
        for d in folders]
    for path, blob in sorted(commit.files.items()):
        entry = {"type": "file", "oid": blob.git_oid, "size": blob.size, "path": path}
        if blob.lfs:
            entry["lfs"] = {"oid": blob.sha256, "size": blob.size,
                            "pointerSize": len(lfs_pointer(blob.sha256, blob.size))}
        entries.append(entry)
    return entries


def _inside(path: str, base: str, recursive: bool) -> bool:
    if base and not path.startswith(base + "/"):
        return False
    rest = path[len(base) + 1:] if base else path
    return recursive or "/" not in rest
