"""Which keys are credentials (a table written by hand, both ways), and what redaction hides."""

from __future__ import annotations

import pytest

from rlc.secrets import REDACTED, holds_secrets, is_credential_key, redact, referenced_env

CREDENTIALS = ["HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "WANDB_API_KEY", "wandbApiKey", "OPENAI_API_KEY", "apiKey",
               "AWS_SECRET_ACCESS_KEY", "db-password", "access_token", "GITHUB_TOKEN", "client_secret", "auth",
               "SSH_PRIVATE_KEY", "Authorization"]
CONFIG_KEYS = ["max_tokens", "max_num_batched_tokens", "tokenizer_path", "tokenizer_revision", "prompt_key",
               "reward_fn_key", "image_key", "key", "HF_HOME", "PATH", "use_kl_loss", "verification_info_column"]


@pytest.mark.parametrize("name", CREDENTIALS)
def test_credential_keys(name: str) -> None:
    assert is_credential_key(name)


@pytest.mark.parametrize("name", CONFIG_KEYS)
def test_ordinary_keys(name: str) -> None:
    assert not is_credential_key(name)


def test_redact_hides_literal_strings_only() -> None:
    tree = {"env_vars": {"HF_TOKEN": "hf_abc", "WANDB_API_KEY": "${oc.env:WANDB_API_KEY}", "HOME": "/root",
                         "AUTH": "Bearer ${oc.env:TOKEN}"},
            "generation": {"pad_token_id": 0, "max_tokens": 16}, "tokens": ["a", "b"]}
    assert redact(tree) == {
        "env_vars": {"HF_TOKEN": REDACTED, "WANDB_API_KEY": "${oc.env:WANDB_API_KEY}", "HOME": "/root",
                     "AUTH": "Bearer ${oc.env:TOKEN}"},
        "generation": {"pad_token_id": 0, "max_tokens": 16}, "tokens": ["a", "b"]}
    assert tree["env_vars"]["HF_TOKEN"] == "hf_abc"  # a copy: the original is untouched
    assert holds_secrets(tree) and not holds_secrets(redact(tree) | {"env_vars": {"HOME": "/root"}})


def test_referenced_env_names_every_variable_the_config_reads() -> None:
    tree = {"env_vars": {"HF_TOKEN": "${oc.env:HF_TOKEN}", "AUTH": "Bearer ${ oc.env:API_TOKEN,none}"},
            "files": ["${oc.env:DATA_DIR}/a.parquet", "plain"], "hf_token_literal": "hf_abc", "n": 3}
    assert referenced_env(tree) == {"HF_TOKEN", "API_TOKEN", "DATA_DIR"}
