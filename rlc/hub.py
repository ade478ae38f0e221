"""Hub references -> commit shas, through the real huggingface_hub client (seed 000's `revision`).

huggingface_hub is imported inside the functions: `rlc validate` never pays for it. The token is whatever
huggingface_hub finds itself (HF_TOKEN, the stored login); it is never passed around, printed or written.
"""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass
from pathlib import Path

FULL_SHA = re.compile(r"[0-9a-f]{40}")


@dataclass(frozen=True)
class PinnedRef:
    repo_id: str
    repo_type: str  # "model" | "dataset"
    requested: str | None
    sha: str
    source: str  # "hub" | "cache"


class HubError(Exception):
    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


def is_local_path(path: str) -> bool:
    """A directory here, or a path-looking string (./x, /x, ~/x), rather than an `org/name` Hub id."""
    return path.startswith(("/", "./", "../", "~")) or Path(path).expanduser().exists()


def pin(repo_id: str, revision: str | None = None, repo_type: str = "model", offline: bool = False) -> PinnedRef:
    offline = offline or os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0", "false", "False")
    return _from_cache(repo_id, revision, repo_type) if offline else _from_hub(repo_id, revision, repo_type)


def _from_hub(repo_id: str, revision: str | None, repo_type: str) -> PinnedRef:
    from huggingface_hub import HfApi
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    api = HfApi()
    what = f"{repo_type} {repo_id}"
    try:
        info = api.repo_info(repo_id, revision=revision, repo_type=repo_type)
    except RevisionNotFoundError:
        raise _revision_error(api, repo_id, revision, repo_type) from None
    except GatedRepoError:
        raise HubError(f"{what} is gated and this token has no access",
                       hint="request access on the Hub, then set HF_TOKEN or run `hf auth login`") from None
    except RepositoryNotFoundError:
        raise HubError(f"{what} does not exist on {_endpoint()}, or it is private and no token with access was "
                       "found", hint="check the name; for a private repo set HF_TOKEN or run `hf auth login`") from None
    except HfHubHTTPError as err:
        status = err.response.status_code if err.response is not None else "?"
        raise HubError(f"the Hub at {_endpoint()} answered {status} for {what}") from None
    except (OSError, ConnectionError) as err:
        raise HubError(f"the Hub at {_endpoint()} cannot be reached ({type(err).__name__})",
                       hint="check the network, or use --offline (HF_HUB_OFFLINE=1) with a local cache") from None
    return PinnedRef(repo_id, repo_type, revision, info.sha, "hub")


def _revision_error(api: object, repo_id: str, revision: str | None, repo_type: str) -> HubError:
    try:
        refs = api.list_repo_refs(repo_id, repo_type=repo_type)  # type: ignore[attr-defined]
        names = [r.name for r in refs.branches] + [r.name for r in refs.tags]
    except Exception:  # noqa: BLE001 - the listing is a courtesy; the error stands without it
        names = []
    close = difflib.get_close_matches(revision or "", names, n=1, cutoff=0.5)
    listing = ", ".join(sorted(names)) or "none listed"
    hint = (f"did you mean `{close[0]}`? " if close else "") + f"branches and tags: {listing}"
    return HubError(f"revision {revision!r} does not exist in {repo_type} {repo_id}", hint=hint)


def _from_cache(repo_id: str, revision: str | None, repo_type: str) -> PinnedRef:
    from huggingface_hub import constants

    folder = Path(constants.HF_HUB_CACHE) / f"{repo_type}s--{repo_id.replace('/', '--')}"
    wanted = revision or "main"
    if FULL_SHA.fullmatch(wanted) and (folder / "snapshots" / wanted).is_dir():
        return PinnedRef(repo_id, repo_type, revision, wanted, "cache")
    ref = folder / "refs" / wanted
    if ref.is_file():
        return PinnedRef(repo_id, repo_type, revision, ref.read_text().strip(), "cache")
    raise HubError(f"offline: {repo_type} {repo_id} at {wanted!r} is not in the local cache ({folder})",
                   hint="download it once while online, or drop --offline / HF_HUB_OFFLINE")


def _endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT
