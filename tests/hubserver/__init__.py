"""A loopback Hugging Face Hub for tests: `HubServer` speaks enough of the Hub HTTP API for the real
huggingface_hub client (info, refs, tree, downloads, repo creation, commits with LFS uploads, branches, tags).

Use it through the `hub_server` fixture in tests/conftest.py, which also points huggingface_hub at it.
"""

from .server import HubServer, Identity, Request
from .store import GITATTRIBUTES, LFS_THRESHOLD, HubStoreError

__all__ = ["GITATTRIBUTES", "LFS_THRESHOLD", "HubServer", "HubStoreError", "Identity", "Request"]
