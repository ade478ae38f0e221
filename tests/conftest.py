"""Fixtures shared by the whole suite.

`hub_server`: the loopback Hugging Face Hub (tests/hubserver), with huggingface_hub pointed at it.

    def test_pinning(hub_server, monkeypatch):
        sha = hub_server.add_repo("allenai/OLMo-2-0425-1B", files={"config.json": "{}"})
        hub_server.create_branch("allenai/OLMo-2-0425-1B", "stage1-step1000-tokens4B")
        monkeypatch.setenv("HF_TOKEN", hub_server.add_token("hf_write"))   # only where a token is wanted
        ...  # HfApi(), hf_hub_download, from_pretrained, subprocesses: all talk to hub_server.url

One server per session (a thread on one port), reset for every test: huggingface_hub reads HF_ENDPOINT into
`huggingface_hub.constants` at import time and some clients keep it (transformers caches one HfApi), so the
endpoint must not move during a session. The fixture patches those constants for this process and sets the
environment variables for subprocesses, gives each test an empty HF home and cache under tmp_path, removes any
token (HF_TOKEN, the stored login) and offline switch the developer's shell may have, and turns Xet off so that
uploads take the LFS path the server implements (see tests/hubserver/server.py).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hubserver import HubServer


@pytest.fixture(scope="session")
def _hub_server_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubServer]:
    server = HubServer(tmp_path_factory.mktemp("hubserver")).start()
    yield server
    server.stop()


@pytest.fixture
def hub_server(_hub_server_session: HubServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[HubServer]:
    server = _hub_server_session
    server.reset()
    server.start()
    point_huggingface_hub_at(server.url, tmp_path / "hf-home", monkeypatch)
    yield server
    server.start()  # a test may have left it down
    _forget_cached_clients()


def point_huggingface_hub_at(url: str, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Send every huggingface_hub call of this process and of its subprocesses to `url`, caching under `home`."""
    from huggingface_hub import constants

    env = {"HF_ENDPOINT": url, "HF_HOME": str(home), "HF_HUB_CACHE": str(home / "hub"),
           "HF_TOKEN_PATH": str(home / "token"), "HF_HUB_DISABLE_XET": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
           "HF_HUB_DISABLE_PROGRESS_BARS": "1", "HF_HUB_DISABLE_UPDATE_CHECK": "1"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE",
                 "HF_DATASETS_OFFLINE", "HUGGINGFACE_HUB_CACHE"):
        monkeypatch.delenv(name, raising=False)
    patches = {"ENDPOINT": url, "HUGGINGFACE_CO_URL_TEMPLATE": url + "/{repo_id}/resolve/{revision}/{filename}",
               "HF_HOME": str(home), "HF_HUB_CACHE": str(home / "hub"), "HF_TOKEN_PATH": str(home / "token"),
               "HF_STORED_TOKENS_PATH": str(home / "stored_tokens"), "HF_HUB_OFFLINE": False,
               "HF_HUB_DISABLE_XET": True, "HF_HUB_DISABLE_TELEMETRY": True,
               "AGENT_HARNESSES_PATH": str(home / ".agent_harnesses.json")}
    for name, value in patches.items():
        monkeypatch.setattr(constants, name, value)
    if "datasets.config" in sys.modules:  # datasets copies the endpoint at import time as well
        datasets_config = sys.modules["datasets.config"]
        monkeypatch.setattr(datasets_config, "HF_ENDPOINT", url)
        monkeypatch.setattr(datasets_config, "HUB_DATASETS_URL", url + "/datasets/{repo_id}/resolve/{revision}/{path}")
        monkeypatch.setattr(datasets_config, "HF_HUB_OFFLINE", False)
    _forget_cached_clients()


def _forget_cached_clients() -> None:
    """transformers keeps one HfApi (with the endpoint of its first use): make the next use build a fresh one."""
    hub_utils = sys.modules.get("transformers.utils.hub")
    if hub_utils is not None and hasattr(hub_utils, "_hf_api"):
        hub_utils._hf_api = None
