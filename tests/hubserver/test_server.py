"""The loopback Hub against the real huggingface_hub client and transformers' from_pretrained."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from huggingface_hub import HfApi, hf_hub_download, snapshot_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import httpx

from hubserver import LFS_THRESHOLD, HubServer

TOKEN = "hf_loopback_write"


def _tiny_model_folder(folder: Path, seed: int) -> tuple[dict, list[int]]:
    """A llama of hidden 64 (one head of 64), 2 layers, and a BPE tokenizer trained here: nothing downloaded."""
    from rlc_runtime.tiny import build_model, build_tokenizer, task_texts

    tokenizer = build_tokenizer(task_texts(), vocab_size=300)
    model = build_model("llama", vocab_size=len(tokenizer), hidden_size=64, num_layers=2, intermediate_size=128,
                        seed=seed)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return {k: v.clone() for k, v in model.state_dict().items()}, tokenizer("3+4=7")["input_ids"]


def test_from_pretrained_loads_exactly_the_pinned_commit(hub_server: HubServer, monkeypatch: pytest.MonkeyPatch,
                                                         tmp_path: Path) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    monkeypatch.setenv("HF_TOKEN", hub_server.add_token(TOKEN))
    api = HfApi()
    api.create_repo("rlc-tests/tiny", private=True)
    first, ids = _tiny_model_folder(tmp_path / "first", seed=0)
    (tmp_path / "first" / "README.md").write_text("---\nlibrary_name: transformers\n---\n# tiny\n")
    sha = api.upload_folder(folder_path=tmp_path / "first", repo_id="rlc-tests/tiny").oid
    _tiny_model_folder(tmp_path / "second", seed=1)
    api.create_repo("rlc-tests/tiny", private=True, exist_ok=True)
    later = api.upload_folder(folder_path=tmp_path / "second", repo_id="rlc-tests/tiny").oid
    assert later != sha and hub_server.sha("rlc-tests/tiny") == later

    config = AutoConfig.from_pretrained("rlc-tests/tiny", revision=sha)
    model = AutoModelForCausalLM.from_pretrained("rlc-tests/tiny", revision=sha)
    tokenizer = AutoTokenizer.from_pretrained("rlc-tests/tiny", revision=sha)

    assert (config.hidden_size, config.num_hidden_layers, config.head_dim) == (64, 2, 64)
    loaded = model.state_dict()
    assert loaded.keys() == first.keys()
    assert all(torch.equal(loaded[k], first[k]) for k in first)
    assert tokenizer("3+4=7")["input_ids"] == ids
    downloads = [r.path for r in hub_server.requests if r.method == "GET" and "/resolve/" in r.path]
    assert f"/rlc-tests/tiny/resolve/{sha}/model.safetensors" in downloads
    assert hub_server.is_lfs("rlc-tests/tiny", "model.safetensors", sha)  # .gitattributes: *.safetensors
    assert not hub_server.is_lfs("rlc-tests/tiny", "config.json", sha)
    assert hub_server.files_at("rlc-tests/tiny", sha)["README.md"].startswith(b"---")
    assert hub_server.repo("rlc-tests/tiny").private
    assert hub_server.gaps == []


def test_a_large_file_goes_the_lfs_path_once(hub_server: HubServer, monkeypatch: pytest.MonkeyPatch,
                                             tmp_path: Path) -> None:
    monkeypatch.setenv("HF_TOKEN", hub_server.add_token(TOKEN))
    big = (b"0123456789abcdef" * (LFS_THRESHOLD // 16 + 4096))  # text (no NUL byte), > 10 MiB: LFS by size
    (tmp_path / "big.txt").write_bytes(big)
    api = HfApi()
    api.create_repo("rlc-tests/big")
    api.upload_file(path_or_fileobj=tmp_path / "big.txt", path_in_repo="data/big.txt", repo_id="rlc-tests/big")
    api.upload_file(path_or_fileobj=b"small", path_in_repo="small.txt", repo_id="rlc-tests/big")

    puts = [r for r in hub_server.requests if r.method == "PUT" and r.path.startswith("/_lfs/")]
    assert len(puts) == 1 and puts[0].status == 200
    assert hub_server.is_lfs("rlc-tests/big", "data/big.txt") and not hub_server.is_lfs("rlc-tests/big", "small.txt")
    assert hub_server.files_at("rlc-tests/big")["data/big.txt"] == big
    assert Path(hf_hub_download("rlc-tests/big", "data/big.txt")).read_bytes() == big

    api.upload_file(path_or_fileobj=tmp_path / "big.txt", path_in_repo="copy.txt", repo_id="rlc-tests/big")
    assert len([r for r in hub_server.requests if r.method == "PUT"]) == 1  # content already stored: no upload
    assert hub_server.files_at("rlc-tests/big")["copy.txt"] == big


def test_refs_tags_and_datasets_through_the_client(hub_server: HubServer, monkeypatch: pytest.MonkeyPatch) -> None:
    first = hub_server.add_repo("org/model", files={"config.json": '{"v": 1}'})
    monkeypatch.setenv("HF_TOKEN", hub_server.add_token(TOKEN))
    api = HfApi()
    api.create_branch("org/model", branch="stage1-step1000-tokens4B")
    api.create_tag("org/model", tag="v1.0")
    second = hub_server.commit("org/model", {"config.json": '{"v": 2}', "sub/dir/x.txt": "x"})

    refs = api.list_repo_refs("org/model")
    assert {(b.name, b.target_commit) for b in refs.branches} == {("main", second),
                                                                   ("stage1-step1000-tokens4B", first)}
    assert [(t.name, t.target_commit) for t in refs.tags] == [("v1.0", first)]
    assert api.model_info("org/model", revision="v1.0").sha == first
    assert api.model_info("org/model", revision=second[:7]).sha == second
    assert {s.rfilename for s in api.model_info("org/model").siblings} == {".gitattributes", "config.json",
                                                                           "sub/dir/x.txt"}
    assert json.loads(Path(hf_hub_download("org/model", "config.json", revision="v1.0")).read_text()) == {"v": 1}
    assert Path(snapshot_download("org/model"), "sub/dir/x.txt").read_text() == "x"
    with pytest.raises(RevisionNotFoundError):
        api.model_info("org/model", revision="stage1-step1000-tokens4b")
    with pytest.raises(EntryNotFoundError):
        hf_hub_download("org/model", "missing.json")

    data_sha = hub_server.add_repo("org/data", files={"train.jsonl": '{"q": 1}\n'}, repo_type="dataset")
    assert api.dataset_info("org/data").sha == data_sha
    path = hf_hub_download("org/data", "train.jsonl", repo_type="dataset", revision=data_sha)
    assert Path(path).read_text() == '{"q": 1}\n'
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("org/data")  # a dataset is not a model
    assert hub_server.gaps == []


def test_private_gated_and_write_access(hub_server: HubServer, monkeypatch: pytest.MonkeyPatch) -> None:
    hub_server.add_repo("org/private", files={"a.txt": "a"}, private=True)
    hub_server.add_repo("org/gated", files={"a.txt": "a"})
    granted, other = hub_server.add_token("hf_granted"), hub_server.add_token("hf_other", write=False)
    hub_server.set_gated("org/gated", granted=(granted,))
    api = HfApi()

    with pytest.raises(RepositoryNotFoundError) as info:
        api.model_info("org/private")
    assert info.value.response.status_code == 401  # as on the Hub: private and missing look the same
    assert api.model_info("org/private", token=other).sha == hub_server.sha("org/private")
    with pytest.raises(HfHubHTTPError) as info:
        api.model_info("org/private", token="hf_not_a_token")
    assert info.value.response.status_code == 401

    assert api.model_info("org/gated").gated  # the info is public; the files are not
    with pytest.raises(GatedRepoError):
        hf_hub_download("org/gated", "a.txt")
    with pytest.raises(GatedRepoError):
        hf_hub_download("org/gated", "a.txt", token=other)
    assert Path(hf_hub_download("org/gated", "a.txt", token=granted)).read_text() == "a"

    with pytest.raises(HfHubHTTPError) as info:
        api.create_repo("org/new")
    assert info.value.response.status_code == 401
    with pytest.raises(HfHubHTTPError) as info:
        api.upload_file(path_or_fileobj=b"x", path_in_repo="x", repo_id="org/private", token=other)
    assert info.value.response.status_code == 403
    assert "x" not in hub_server.files_at("org/private")


def test_failures_and_downtime(hub_server: HubServer) -> None:
    sha = hub_server.add_repo("org/model", files={"a.txt": "a"})
    api = HfApi()
    hub_server.fail(503, times=1)
    with pytest.raises(HfHubHTTPError) as info:
        api.model_info("org/model")
    assert info.value.response.status_code == 503
    assert api.model_info("org/model").sha == sha  # one failure only

    with hub_server.down(), pytest.raises(httpx.ConnectError):
        api.model_info("org/model")
    assert api.model_info("org/model").sha == sha  # back on the same port


def test_subprocesses_reach_the_server_through_the_environment(hub_server: HubServer) -> None:
    sha = hub_server.add_repo("org/model", files={"a.txt": "a"})
    code = "from huggingface_hub import HfApi; print(HfApi().model_info('org/model').sha)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ),
                         timeout=60, check=True)
    assert out.stdout.strip() == sha
