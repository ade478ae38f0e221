"""A Hugging Face Hub-compatible HTTP server on 127.0.0.1, for tests that run the real huggingface_hub client.

Design decisions:
- The standard library's ThreadingHTTPServer, speaking HTTP/1.0: every response closes its connection, so
  `down()` really makes the Hub unreachable (no kept-alive connection goes on being served by a live thread).
- State (`store.Store`) is plain Python objects behind one lock; file contents live on disk, content-addressed.
  Tests seed and inspect it directly through the methods below, with no HTTP in between.
- Uploads: huggingface_hub >= 1.0 uploads through Xet whenever the `hf_xet` package is installed, without asking
  the server, so a server cannot make it fall back. Setting `HF_HUB_DISABLE_XET=1` (read at import time into
  `huggingface_hub.constants.HF_HUB_DISABLE_XET`, which the `hub_server` fixture also patches) makes the client
  use the preupload endpoint and the plain LFS batch API, which this server implements (basic transfer, one PUT
  per object to a one-time URL, then verify). Downloads use Xet only when a server sends `X-Xet-Hash`; this one
  never does, so downloads are plain GETs of `/resolve/`.
"""

from __future__ import annotations

import json
import os
import shutil
import socketserver
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import parse_qs, unquote, urlsplit

from .routes import ROUTES, Api, Reply, json_reply
from .store import HubStoreError, Repo, Store, check_path


@dataclass(frozen=True)
class Identity:
    user: str
    write: bool


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    status: int


class HubServer:
    """The loopback Hub. `start()` binds a free port once; `stop()`/`start()` keep that port."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.lock = threading.RLock()
        self.port = 0
        self._httpd: ThreadingHTTPServer | None = None
        self._generation = 0
        self.reset()

    # ---- lifecycle --------------------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> HubServer:
        if self._httpd is None:
            httpd = _Server(("127.0.0.1", self.port), _Handler)
            httpd.hub = self
            self.port = httpd.server_address[1]
            threading.Thread(target=httpd.serve_forever, args=(0.05,), name="hubserver", daemon=True).start()
            self._httpd = httpd
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    @contextmanager
    def down(self) -> Iterator[None]:
        """The Hub unreachable (connection refused) inside the block, back on the same port after it."""
        self.stop()
        try:
            yield
        finally:
            self.start()

    def fail(self, status: int = 500, times: int | None = None) -> None:
        """Answer the next `times` requests (all, if None, until `recover()`) with `status`."""
        with self.lock:
            self.failure = (status, times)

    def recover(self) -> None:
        with self.lock:
            self.failure = None

    def reset(self) -> None:
        """Forget all repos, tokens, failures and the request log (the port stays)."""
        with self.lock:
            self._generation += 1
            self.store = Store(self.root / f"store-{self._generation}")
            self.api = Api(self)
            self.tokens: dict[str, Identity] = {}
            self.failure: tuple[int, int | None] | None = None
            self.requests: list[Request] = []
            self.gaps: list[str] = []  # requests this emulation could not serve (no route, or a handler failed)

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- seeding and inspecting (no HTTP) ---------------------------------------------------------------------
    def add_token(self, token: str, *, user: str = "tester", write: bool = True) -> str:
        with self.lock:
            self.tokens[token] = Identity(user, write)
        return token

    def add_repo(self, repo_id: str, files: Files | None = None, *, repo_type: str = "model",
                 private: bool = False, message: str = "Add files") -> str:
        """Create a repo (first commit: .gitattributes, as on the Hub), then commit `files` to main if given.
        Returns the sha of main."""
        with self.lock:
            repo = self.store.create_repo(repo_type, repo_id, private=private)
            return self.commit(repo_id, files, repo_type=repo_type, message=message) if files else repo.branches["main"]

    def commit(self, repo_id: str, files: Files | None = None, *, branch: str = "main", delete: tuple[str, ...] = (),
               repo_type: str = "model", message: str = "Update files") -> str:
        """Commit `files` ({path: bytes | str} or a directory) and deletions to `branch`; returns the new sha."""
        with self.lock:
            repo = self.repo(repo_id, repo_type)
            table = {check_path(p): self.store.classify(repo, branch, p, data) for p, data in _as_files(files)}
            return self.store.commit(repo, branch, table, delete, message).sha

    def create_branch(self, repo_id: str, branch: str, *, revision: str = "main", repo_type: str = "model") -> str:
        with self.lock:
            return self.store.create_ref(self.repo(repo_id, repo_type), "branch", branch, revision)

    def create_tag(self, repo_id: str, tag: str, *, revision: str = "main", repo_type: str = "model") -> str:
        with self.lock:
            return self.store.create_ref(self.repo(repo_id, repo_type), "tag", tag, revision)

    def set_private(self, repo_id: str, private: bool = True, *, repo_type: str = "model") -> None:
        with self.lock:
            self.repo(repo_id, repo_type).private = private

    def set_gated(self, repo_id: str, granted: tuple[str, ...] = (), *, repo_type: str = "model") -> None:
        """Gate the repo's files: only the `granted` tokens may download them (info and refs stay visible)."""
        with self.lock:
            repo = self.repo(repo_id, repo_type)
            repo.gated, repo.granted = True, set(granted)

    def repo(self, repo_id: str, repo_type: str = "model") -> Repo:
        with self.lock:
            return self.store.repo(repo_type, repo_id)

    def sha(self, repo_id: str, revision: str = "main", *, repo_type: str = "model") -> str:
        with self.lock:
            return self.repo(repo_id, repo_type).resolve(revision).sha

    def files_at(self, repo_id: str, revision: str = "main", *, repo_type: str = "model") -> dict[str, bytes]:
        with self.lock:
            commit = self.repo(repo_id, repo_type).resolve(revision)
            return {path: self.store.read(blob) for path, blob in commit.files.items()}

    def is_lfs(self, repo_id: str, path: str, revision: str = "main", *, repo_type: str = "model") -> bool:
        with self.lock:
            return self.repo(repo_id, repo_type).resolve(revision).files[path].lfs

    def repo_url(self, repo_type: str, repo_id: str) -> str:
        return f"{self.url}/{'' if repo_type == 'model' else repo_type + 's/'}{repo_id}"

    def _take_failure(self) -> int | None:
        with self.lock:
            if self.failure is None:
                return None
            status, times = self.failure
            if times is not None:
                self.failure = (status, times - 1) if times > 1 else None
            return status


Files = Mapping[str, bytes | str] | str | os.PathLike[str]


def _as_files(files: Files | None) -> list[tuple[str, bytes]]:
    if files is None:
        return []
    if isinstance(files, (str, os.PathLike)):
        root = Path(files)
        return [(p.relative_to(root).as_posix(), p.read_bytes()) for p in sorted(root.rglob("*")) if p.is_file()]
    return [(path, data.encode() if isinstance(data, str) else bytes(data)) for path, data in files.items()]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    hub: HubServer

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks the host name up (getfqdn), which can stall where there is no DNS.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = "127.0.0.1", self.server_address[1]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"
    timeout = 60
    server: _Server

    def do_GET(self) -> None:  # noqa: N802 - the names http.server dispatches to
        self._dispatch("GET")

    def do_HEAD(self) -> None:  # noqa: N802
        self._dispatch("HEAD")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._dispatch("PUT")

    def do_DELETE(self) -> None:  # noqa: N802
        self._dispatch("DELETE")

    # ---- request ----------------------------------------------------------------------------------------------
    def _dispatch(self, method: str) -> None:
        hub = self.server.hub
        url = urlsplit(self.path)
        self.url_path, self.query = url.path, parse_qs(url.query)
        self._stream: BinaryIO | None = None
        self._body: bytes | None = None
        try:
            reply = self._route(hub, method)
        except HubStoreError as err:
            reply = _error_reply(err)
        except Exception as err:  # a bug here, or a request shape this emulation does not know: say so, loudly
            with hub.lock:
                hub.gaps.append(f"{method} {self.url_path}: {type(err).__name__}: {err}")
            reply = _error_reply(HubStoreError(500, f"loopback Hub failed: {type(err).__name__}: {err}"))
        self._send(reply, method)
        self._drain()

    def _route(self, hub: HubServer, method: str) -> Reply:
        status = hub._take_failure()
        if status is not None:
            raise HubStoreError(status, "simulated failure of the loopback Hub")
        for route_method, pattern, name in ROUTES:
            match = pattern.fullmatch(self.url_path)
            if route_method == method and match:
                args = {k: unquote(v) for k, v in match.groupdict().items() if v is not None}
                if name == "lfs_put":
                    return self._lfs_put(hub, args["oid"])
                with hub.lock:
                    return getattr(hub.api, name)(self, **args)
        with hub.lock:
            hub.gaps.append(f"{method} {self.url_path}: no route")
        raise HubStoreError(404, f"no route for {method} {self.url_path} on the loopback Hub")

    def _lfs_put(self, hub: HubServer, oid: str) -> Reply:
        with hub.lock:
            size = hub.api.lfs_ticket(self, oid)
        hub.store.put_stream(self._body_stream(), size, oid)
        with hub.lock:
            hub.api.tickets.pop(oid, None)
        reply = json_reply({})
        reply.headers["ETag"] = f'"{oid}"'
        return reply

    def body(self) -> bytes:
        if self._body is None:
            self._body = _read_all(self._body_stream())
        return self._body

    def json(self) -> Any:
        raw = self.body()
        try:
            return json.loads(raw) if raw.strip() else {}
        except ValueError as err:
            raise HubStoreError(400, f"request body is not JSON: {err}") from None

    def _body_stream(self) -> BinaryIO:
        if self._stream is None:
            self._stream = _Limited(self.rfile, int(self.headers.get("Content-Length") or 0))
            if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                # huggingface_hub always sends a Content-Length; reading chunked bodies is left out on purpose
                raise HubStoreError(411, "the loopback Hub needs a Content-Length (chunked bodies are not read)")
        return self._stream

    def _drain(self) -> None:
        """Read what the handler left unread: closing a socket with unread data resets the connection."""
        with suppress(OSError):
            _read_all(self._body_stream())

    # ---- response ---------------------------------------------------------------------------------------------
    def _send(self, reply: Reply, method: str) -> None:
        body = reply.body
        size = body.stat().st_size if isinstance(body, Path) else len(body or b"")
        try:
            self.send_response(reply.status)
            for key, value in reply.headers.items():
                self.send_header(key, value)
            if "Content-Length" not in reply.headers:
                self.send_header("Content-Length", str(size))
            self.end_headers()
            if method == "HEAD" or body is None:
                return
            if isinstance(body, Path):
                with body.open("rb") as source:
                    shutil.copyfileobj(source, self.wfile, 1 << 20)
            else:
                self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client went away (e.g. a test stopped the download); nothing to answer

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        with self.server.hub.lock:
            self.server.hub.requests.append(Request(self.command, self.url_path, int(code)))

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the signature http.server calls
        pass  # keep test output clean; `HubServer.requests` records every request


def _error_reply(err: HubStoreError) -> Reply:
    reply = json_reply({"error": err.message}, status=err.status)
    # a header is one latin-1 line; the JSON body keeps the message as it is
    reply.headers["X-Error-Message"] = " ".join(err.message.split()).encode("latin-1", "replace").decode("latin-1")
    if err.code:
        reply.headers["X-Error-Code"] = err.code
    return reply


def _read_all(stream: BinaryIO) -> bytes:
    parts = []
    while chunk := stream.read(1 << 20):
        parts.append(chunk)
    return b"".join(parts)


class _Limited:
    """A request body of known length, as a stream that ends where the body ends."""

    def __init__(self, raw: BinaryIO, length: int) -> None:
        self.raw, self.left = raw, length

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        data = self.raw.read(n) if n else b""
        self.left -= len(data)
        return data
