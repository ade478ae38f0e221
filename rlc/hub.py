"""Hub references -> commit shas, through the real huggingface_hub client (seed 000's `revision`).

A launch must say exactly what it ran, so every `org/name` model, tokenizer or dataset is pinned to a full
40-character commit sha before anything starts: a branch, a tag, or a short sha all resolve on the Hub itself
(`repo_info(revision=...)` returns the commit it points at). Each way this can fail becomes one `HubError` whose
message says what and where, and whose hint says what to do: a revision that does not exist lists the branches
and tags that do, with the closest one first.

huggingface_hub is imported inside the functions, so `rlc validate` never pays for it. The token is whatever
huggingface_hub finds itself (HF_TOKEN, the stored login) unless one is passed; it is never printed, returned or
written. Offline (`offline=True` or HF_HUB_OFFLINE=1), the sha comes from the local Hugging Face cache: the
`refs/<revision>` file a download wrote, and only if that commit's snapshot folder is there too, so that "pinned
from cache" means the files can actually be loaded without the Hub.
"""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SHA_PREFIX = re.compile(r"[0-9a-f]{4,40}")
MAX_LISTED = 12  # refs shown in full below this many; above it, the closest ones and a count


@dataclass(frozen=True)
class PinnedRef:
    repo_id: str
    repo_type: str  # "model" | "dataset"
    requested: str | None  # the revision as the user wrote it (None: the default branch)
    sha: str
    source: str  # "hub" | "cache"


class HubError(Exception):
    """One line for the user, and optionally what to do about it."""

    def __init__(self, message: str, hint: str | None = None, about_revision: bool = False,
                 unreachable: bool = False) -> None:
        super().__init__(message)
        self.hint = hint
        self.about_revision = about_revision  # the repo exists; the revision asked for does not
        self.unreachable = unreachable  # the Hub could not answer (offline, no network, 5xx): nothing is known


def is_local_path(path: str) -> bool:
    """A directory here, or a path-looking string (./x, ../x, /x, ~/x), rather than an `org/name` Hub id."""
    return path.startswith(("/", "./", "../", "~")) or Path(path).expanduser().exists()


def offline_requested(offline: bool = False) -> bool:
    return offline or os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def pin(repo_id: str, revision: str | None = None, repo_type: str = "model", offline: bool = False,
        token: str | None = None) -> PinnedRef:
    """Resolve `revision` (branch, tag, short or full sha; None = default branch) of a Hub repo to its full sha."""
    if offline_requested(offline):
        return _from_cache(repo_id, revision, repo_type)
    return _from_hub(repo_id, revision, repo_type, token)


def _from_hub(repo_id: str, revision: str | None, repo_type: str, token: str | None) -> PinnedRef:
    from huggingface_hub import HfApi
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        HFValidationError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    api = HfApi(token=token)
    what = f"{repo_type} {repo_id}"
    try:
        info = api.repo_info(repo_id, revision=revision, repo_type=repo_type)
        if info.gated:  # the files, not the info, are gated: check access now rather than on the GPUs
            api.auth_check(repo_id, repo_type=repo_type)
    except RevisionNotFoundError:
        raise _revision_error(api, repo_id, revision, repo_type) from None
    except GatedRepoError:
        who = "this token has not been granted access" if _has_token(token) else "no Hugging Face token was found"
        raise HubError(f"{what} is gated and {who}",
                       hint="request access on the repo's page on the Hub, then set HF_TOKEN or run "
                            "`hf auth login`") from None
    except RepositoryNotFoundError:
        raise _missing_repo_error(repo_id, what, token) from None
    except HFValidationError as err:
        if repo_id.count("/") > 1:  # a path, not an id: most likely a relative path from another directory
            raise HubError(f"{repo_id!r} is no directory under {Path.cwd()} (relative paths are relative to the "
                           "current directory) and no Hub repo id",
                           hint="run from the directory the path is relative to, or give an absolute path") from None
        raise HubError(f"{repo_id!r} is not a valid Hub repo id ({_first_line(err)})",
                       hint="use `namespace/name`, or a path starting with ./ or / for a local directory") from None
    except OfflineModeIsEnabled:
        return _from_cache(repo_id, revision, repo_type)
    except HfHubHTTPError as err:
        raise _http_error(err, what, token) from None
    except _transport_errors() as err:
        raise HubError(f"the Hub at {_endpoint()} cannot be reached ({type(err).__name__}) to resolve {what}",
                       hint="check the network and HF_ENDPOINT, or use --offline (HF_HUB_OFFLINE=1) to resolve "
                            "from the local Hugging Face cache", unreachable=True) from None
    if not info.sha:
        raise HubError(f"the Hub at {_endpoint()} returned no commit for {what} at {revision or 'main'!r}")
    return PinnedRef(repo_id, repo_type, revision, info.sha, "hub")


def _revision_error(api: Any, repo_id: str, revision: str | None, repo_type: str) -> HubError:
    message = f"revision {revision or 'main'!r} does not exist in {repo_type} {repo_id}"
    try:
        refs = api.list_repo_refs(repo_id, repo_type=repo_type)
    except Exception:  # noqa: BLE001 - the listing is a courtesy; the error stands without it
        return HubError(message, hint="list its branches and tags with `hf repo-refs` or on the Hub's web page",
                        about_revision=True)
    branches, tags = [r.name for r in refs.branches], [r.name for r in refs.tags]
    names = branches + tags
    close = difflib.get_close_matches(revision or "main", names, n=MAX_LISTED, cutoff=0.5)
    suggestion = f"did you mean `{close[0]}`? " if close else ""
    if len(names) <= MAX_LISTED:
        listing = f"branches: {', '.join(sorted(branches)) or 'none'}; tags: {', '.join(sorted(tags)) or 'none'}"
    else:
        shown = close or sorted(names)[:MAX_LISTED]
        listing = (f"{len(branches)} branches and {len(tags)} tags exist; closest: {', '.join(shown)}"
                   if close else f"{len(branches)} branches and {len(tags)} tags exist, e.g. {', '.join(shown)}")
    return HubError(message, hint=suggestion + listing, about_revision=True)


def _missing_repo_error(repo_id: str, what: str, token: str | None) -> HubError:
    if _has_token(token):
        message = f"{what} does not exist on {_endpoint()}, or the Hugging Face token in use has no access to it"
        hint = "check the name and the repo type; for a private repo use a token that can read it"
    else:
        message = f"{what} does not exist on {_endpoint()}, or it is private and no Hugging Face token was found"
        hint = "check the name; for a private repo set HF_TOKEN or run `hf auth login`"
    if "/" in repo_id and not repo_id.startswith("."):
        hint += f"; a local directory {repo_id} does not exist here either"
    return HubError(message, hint=hint)


def _http_error(err: Any, what: str, token: str | None) -> HubError:
    status = err.response.status_code if getattr(err, "response", None) is not None else None
    if status == 401:
        return HubError(f"the Hub at {_endpoint()} refused the Hugging Face token while resolving {what}",
                        hint="the token is invalid or expired: set a valid HF_TOKEN or run `hf auth login`")
    if status == 403:
        return HubError(f"the Hugging Face token in use may not read {what}",
                        hint="use a token with read access to this repo")
    if status is not None and status >= 500:
        return HubError(f"the Hub at {_endpoint()} failed (HTTP {status}) while resolving {what}",
                        hint="try again later, or use --offline (HF_HUB_OFFLINE=1) with a local cache",
                        unreachable=True)
    return HubError(f"the Hub at {_endpoint()} answered HTTP {status} for {what}: {_first_line(err)}")


def _from_cache(repo_id: str, revision: str | None, repo_type: str) -> PinnedRef:
    from huggingface_hub import constants
    from huggingface_hub.file_download import repo_folder_name

    folder = Path(constants.HF_HUB_CACHE) / repo_folder_name(repo_id=repo_id, repo_type=repo_type)
    wanted = revision or "main"
    sha = cached_sha(folder, wanted)
    if sha is None:
        raise HubError(f"offline: {repo_type} {repo_id} at {wanted!r} is not in the local Hugging Face cache "
                       f"({folder})", hint="download it once while online, or drop --offline / HF_HUB_OFFLINE",
                       unreachable=True)
    return PinnedRef(repo_id, repo_type, revision, sha, "cache")


def cached_sha(folder: Path, wanted: str) -> str | None:
    """The sha `wanted` names in the cache, provided that commit's files (its snapshot folder) are there."""
    snapshots = folder / "snapshots"
    ref = folder / "refs" / wanted
    if ref.is_file():
        candidates = [ref.read_text().strip()]
    elif SHA_PREFIX.fullmatch(wanted) and snapshots.is_dir():
        candidates = [p.name for p in snapshots.iterdir() if p.name.startswith(wanted)]
    else:
        return None
    found = [sha for sha in candidates if (snapshots / sha).is_dir()]
    return found[0] if len(found) == 1 else None


def _transport_errors() -> tuple[type[BaseException], ...]:
    """Connection refused, DNS, timeouts: OSError covers requests (huggingface_hub < 1.0), httpx covers >= 1.0."""
    errors: list[type[BaseException]] = [OSError]
    try:
        from huggingface_hub.utils import httpx

        errors.append(httpx.TransportError)
    except ImportError:
        pass
    return tuple(errors)


def _has_token(token: str | None) -> bool:
    from huggingface_hub import get_token

    return bool(token or get_token())


def _first_line(err: BaseException) -> str:
    lines = [line for line in str(err).splitlines() if line.strip()]
    return lines[0][:200] if lines else type(err).__name__


def _endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT
