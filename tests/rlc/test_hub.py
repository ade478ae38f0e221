"""Pinning Hub references to commit shas, with the real huggingface_hub client against the loopback Hub."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hubserver import HubServer
from huggingface_hub import snapshot_download

from rlc.hub import HubError, PinnedRef, is_local_path, pin

OLMO = "allenai/OLMo-2-0425-1B"
BRANCH = "stage1-step1000-tokens4B"


@pytest.fixture
def olmo(hub_server: HubServer) -> dict[str, str]:
    """An OLMo-like repo: a training-stage branch, a tag, and main moved on since."""
    shas = {"stage": hub_server.add_repo(OLMO, files={"config.json": '{"step": 1000}'})}
    hub_server.create_branch(OLMO, BRANCH)
    shas["tag"] = hub_server.commit(OLMO, {"config.json": '{"step": 2000}'})
    hub_server.create_tag(OLMO, "v1.0")
    shas["main"] = hub_server.commit(OLMO, {"config.json": '{"step": 3000}'})
    return shas


def _error(*args: object, **kwargs: object) -> HubError:
    with pytest.raises(HubError) as info:
        pin(*args, **kwargs)  # type: ignore[arg-type]
    return info.value


def test_branch_tag_and_shas_pin_to_full_commits(olmo: dict[str, str]) -> None:
    assert pin(OLMO, BRANCH) == PinnedRef(OLMO, "model", BRANCH, olmo["stage"], "hub")
    assert pin(OLMO, "v1.0").sha == olmo["tag"]
    assert pin(OLMO).sha == olmo["main"] and pin(OLMO).requested is None
    assert pin(OLMO, olmo["tag"][:7]) == PinnedRef(OLMO, "model", olmo["tag"][:7], olmo["tag"], "hub")
    assert pin(OLMO, olmo["stage"]).sha == olmo["stage"]


def test_misspelt_revision_lists_the_real_ones(olmo: dict[str, str]) -> None:
    err = _error(OLMO, "stage1-step1000-tokens4b")
    assert str(err) == f"revision 'stage1-step1000-tokens4b' does not exist in model {OLMO}"
    assert err.hint == f"did you mean `{BRANCH}`? branches: main, {BRANCH}; tags: v1.0"
    assert "0" * 40 in str(_error(OLMO, "0" * 40))


def test_many_refs_show_the_closest_and_a_count(hub_server: HubServer) -> None:
    hub_server.add_repo("org/many", files={"a": "a"})
    for step in range(0, 30000, 1000):
        hub_server.create_branch("org/many", f"stage1-step{step}-tokens{step // 250}B")
    err = _error("org/many", "stage1-step1000-tokens4")
    assert err.hint is not None and err.hint.startswith("did you mean `stage1-step1000-tokens4B`? 31 branches and 0 ")
    assert err.hint.count("stage1-") <= 13  # the closest dozen, not all thirty


def test_missing_repo_and_private_repo_with_and_without_token(hub_server: HubServer,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    missing = _error("allenai/no-such-model")
    assert str(missing) == (f"model allenai/no-such-model does not exist on {hub_server.url}, or it is private and "
                            "no Hugging Face token was found")
    assert missing.hint is not None and "HF_TOKEN" in missing.hint and "hf auth login" in missing.hint

    sha = hub_server.add_repo("org/private", files={"a": "a"}, private=True)
    assert str(_error("org/private")) == str(missing).replace("allenai/no-such-model", "org/private")
    token = hub_server.add_token("hf_secret_value")
    assert pin("org/private", token=token).sha == sha
    monkeypatch.setenv("HF_TOKEN", token)  # found the way huggingface_hub finds it
    assert pin("org/private").sha == sha
    assert "token in use has no access" in str(_error("allenai/no-such-model"))

    monkeypatch.setenv("HF_TOKEN", "hf_wrong_value")
    refused = _error("org/private")
    assert "refused the Hugging Face token" in str(refused)
    assert "hf_wrong_value" not in f"{refused} {refused.hint}"


def test_gated_repo_needs_a_granted_token(hub_server: HubServer, monkeypatch: pytest.MonkeyPatch) -> None:
    sha = hub_server.add_repo("org/gated", files={"a": "a"})
    hub_server.set_gated("org/gated", granted=(hub_server.add_token("hf_granted"),))
    assert str(_error("org/gated")) == "model org/gated is gated and no Hugging Face token was found"
    monkeypatch.setenv("HF_TOKEN", hub_server.add_token("hf_other"))
    assert "has not been granted access" in str(_error("org/gated"))
    assert pin("org/gated", token="hf_granted").sha == sha


def test_dataset_repo(hub_server: HubServer) -> None:
    sha = hub_server.add_repo("org/math", files={"train.jsonl": "{}\n"}, repo_type="dataset")
    assert pin("org/math", repo_type="dataset") == PinnedRef("org/math", "dataset", None, sha, "hub")
    assert "model org/math does not exist" in str(_error("org/math"))


def test_unreachable_and_failing_hub(hub_server: HubServer, olmo: dict[str, str]) -> None:
    with hub_server.down():
        err = _error(OLMO, BRANCH)
    assert str(err).startswith(f"the Hub at {hub_server.url} cannot be reached (ConnectError)")
    assert err.hint is not None and "--offline" in err.hint
    hub_server.fail(503)
    assert str(_error(OLMO, BRANCH)) == f"the Hub at {hub_server.url} failed (HTTP 503) while resolving model {OLMO}"


def test_offline_resolves_from_the_cache_of_a_download(hub_server: HubServer, olmo: dict[str, str],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    snapshot_download(OLMO, revision=BRANCH)
    with hub_server.down():  # offline must not need the Hub at all
        assert pin(OLMO, BRANCH, offline=True) == PinnedRef(OLMO, "model", BRANCH, olmo["stage"], "cache")
        assert pin(OLMO, olmo["stage"][:8], offline=True).sha == olmo["stage"]
        not_cached = _error(OLMO, "v1.0", offline=True)
        assert str(not_cached).startswith(f"offline: model {OLMO} at 'v1.0' is not in the local Hugging Face cache")
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        assert pin(OLMO, BRANCH).source == "cache"
        assert "not in the local Hugging Face cache" in str(_error("org/never-downloaded"))


def test_bad_repo_id_is_one_message(hub_server: HubServer) -> None:
    assert str(_error("org/bad..name")).startswith("'org/bad..name' is not a valid Hub repo id")
    # A relative path used from another directory: say so, rather than blame the Hub id syntax.
    assert "is no directory under" in str(_error("examples/models/tiny-qwen2"))


def test_local_paths_and_hub_ids(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "org" / "here").mkdir(parents=True)
    assert all(map(is_local_path, ["./model", "../model", "/abs/model", "~/model", "org/here", "."]))
    assert not any(map(is_local_path, [OLMO, "gpt2", "org/not-here"]))


def test_importing_rlc_hub_does_not_import_huggingface_hub() -> None:
    code = "import sys, rlc.hub; assert 'huggingface_hub' not in sys.modules, 'imported eagerly'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_rlc_resolve_pins_the_branch_and_lists_real_ones_for_a_typo(olmo: dict[str, str]) -> None:
    from ruamel.yaml import YAML
    from typer.testing import CliRunner

    from rlc.cli import app

    example = str(Path(__file__).parents[2] / "examples" / "yaml" / "olmo2_revision.yaml")
    result = CliRunner().invoke(app, ["resolve", example])
    assert result.exit_code == 0, result.output
    model = YAML(typ="safe").load(result.stdout)["actor_rollout_ref"]["model"]
    assert (model["revision"], model["revision_requested"]) == (olmo["stage"], BRANCH)

    typo = CliRunner().invoke(app, ["resolve", example, "--set", "actor_rollout_ref.model.revision=stage1-step1000"])
    assert typo.exit_code == 1
    assert "revision 'stage1-step1000' does not exist" in typo.output and f"`{BRANCH}`" in typo.output
    assert "Traceback" not in typo.output
