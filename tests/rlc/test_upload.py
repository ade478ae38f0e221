"""`rlc upload` against the loopback Hub: a 503 is retried until it passes, an offline Hub is reported at once,
and the model card cannot be made to say more than rlc wrote (YAML metadata from an emitter, config redacted)."""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from rlc.cli import app
from rlc.upload import UploadError, UploadTarget, card_for, model_card, upload_folder

MODEL = Path(__file__).parents[2] / "examples" / "models" / "tiny-qwen2"


def _front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("\n---\n", 1)[0][4:])


def test_a_newline_in_base_model_adds_no_metadata() -> None:
    hostile = "org/model\nlicense: mit\nrlc_injected: true\n---\n# injected heading"
    card = model_card("me/run", hostile, "abc", "data | extra cell\n- injected", "grpo", {"a": 1}, optimizer=False)
    assert _front_matter(card) == {"library_name": "transformers", "tags": ["rlc", "reinforcement-learning", "grpo"]}
    injected = ("license", "rlc_injected", "# injected", "- injected")
    assert not [line for line in card.splitlines() if line.startswith(injected)]
    (row,) = [line for line in card.splitlines() if line.startswith("| dataset |")]
    assert re.split(r"(?<!\\)\|", row)[2].strip() == r"data \| extra cell - injected"  # one cell, escaped
    clean = model_card("me/run", "Qwen/Qwen2-0.5B", "abc", "d", "grpo", None, optimizer=True)
    assert _front_matter(clean)["base_model"] == "Qwen/Qwen2-0.5B"


def test_card_shows_references_and_redacts_literals(tmp_path: Path) -> None:
    config = {"actor_rollout_ref": {"model": {"path": "Qwen/Qwen2-0.5B", "revision": "abc123"}},
              "data": {"train_files": "d.parquet"}, "algorithm": {"adv_estimator": "grpo"},
              "ray_kwargs": {"ray_init": {"runtime_env": {"env_vars": {
                  "HF_TOKEN": "${oc.env:HF_TOKEN}", "WANDB_API_KEY": "literal-wandb-key"}}}}}
    (tmp_path / "config.resolved.yaml").write_text(yaml.safe_dump(config))
    folder = tmp_path / "checkpoints" / "global_step_1" / "actor" / "huggingface"
    folder.mkdir(parents=True)
    card = card_for(folder, "me/run", None, include_optimizer=False)
    shown = yaml.safe_load(card.split("```yaml\n", 1)[1].split("```", 1)[0])
    assert shown["ray_kwargs"]["ray_init"]["runtime_env"]["env_vars"] == {
        "HF_TOKEN": "${oc.env:HF_TOKEN}", "WANDB_API_KEY": "<redacted>"}
    assert "literal-wandb-key" not in card and _front_matter(card)["base_model"] == "Qwen/Qwen2-0.5B"


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return Path(shutil.copytree(MODEL, tmp_path / "model"))


def test_503_is_retried_then_succeeds(hub_server, monkeypatch: pytest.MonkeyPatch, model: Path) -> None:
    monkeypatch.setenv("HF_TOKEN", hub_server.add_token("hf_writer"))
    hub_server.fail(503, times=2)
    upload_folder(model, UploadTarget("tester/retried"), include_optimizer=False, max_retries=3, backoff_s=0.05)
    assert [r.status for r in hub_server.requests].count(503) == 2
    assert hub_server.files_at("tester/retried")["model.safetensors"] == (model / "model.safetensors").read_bytes()


def test_503_beyond_the_retries_fails_with_the_count(hub_server, monkeypatch: pytest.MonkeyPatch,
                                                     model: Path) -> None:
    monkeypatch.setenv("HF_TOKEN", hub_server.add_token("hf_writer"))
    hub_server.fail(503)
    with pytest.raises(UploadError, match="failed after 3 attempt"):
        upload_folder(model, UploadTarget("tester/down"), include_optimizer=False, max_retries=2, backoff_s=0.01)


def test_unreachable_hub_is_reported_at_once(hub_server, monkeypatch: pytest.MonkeyPatch, model: Path) -> None:
    monkeypatch.setenv("HF_TOKEN", hub_server.add_token("hf_writer"))
    with hub_server.down():
        start = time.monotonic()
        result = CliRunner().invoke(app, ["upload", str(model), "--repo-id", "tester/x", "--optimizer", "none"])
        elapsed = time.monotonic() - start
    assert result.exit_code == 1
    assert f"the Hub at {hub_server.url} cannot be reached" in result.output
    assert "retrying" not in result.output and elapsed < 1.5  # the default backoff would wait 1 s or more


def test_offline_mode_is_reported_at_once(hub_server, monkeypatch: pytest.MonkeyPatch, model: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = CliRunner().invoke(app, ["upload", str(model), "--repo-id", "tester/x", "--optimizer", "none"])
    assert result.exit_code == 1 and "HF_HUB_OFFLINE is set" in result.output
    assert hub_server.requests == []


def test_backticks_in_the_config_stay_inside_its_code_block() -> None:
    config = {"trainer": {"experiment_name": "x\n```\n# Heading from a config value\n````"}}
    card = model_card("me/run", "Qwen/Qwen2-0.5B", "abc", "d", "grpo", config, optimizer=False)
    fence, rest = card.split("## Resolved config", 1)[1].split("\n\n", 2)[2].split("yaml\n", 1)
    assert set(fence) == {"`"} and len(fence) == 5
    block, after = rest.split("\n" + fence, 1)
    assert yaml.safe_load(block) == config and after.strip() == ""
