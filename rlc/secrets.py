"""What counts as a secret in a config, and how it is hidden when printed.

Two rules, applied everywhere rlc shows or publishes a config (`rlc show`, `rlc resolve` on a terminal, logger
configs, model cards):
- An environment reference (`${oc.env:HF_TOKEN}`) is never replaced by its value in anything rlc writes; the
  runtime resolves it from its own environment when it starts (resolve.py keeps the references).
- A value under a key that looks like a credential (`HF_TOKEN`, `WANDB_API_KEY`, `password`, ...) that is a literal
  string, not a reference, is shown as `<redacted>`. Keys are split into words so that `max_num_batched_tokens`,
  `tokenizer_path` or `prompt_key` are not mistaken for credentials; only strings are redacted (`pad_token_id: 0`
  is a number, not a secret).
"""

from __future__ import annotations

import re
from typing import Any

REDACTED = "<redacted>"
SECRET_WORDS = {"token", "secret", "password", "passwd", "passphrase", "credential", "credentials", "apikey",
                "auth", "authorization", "bearer", "cookie"}
KEY_QUALIFIERS = {"api", "access", "private", "secret", "signing", "encryption", "ssh", "license"}
ENV_REFERENCE = re.compile(r"\$\{\s*oc\.env:[^{}]*\}")


def is_credential_key(name: object) -> bool:
    """`HF_TOKEN`, `wandbApiKey`, `db-password`: yes. `max_tokens`, `tokenizer_path`, `reward_fn_key`: no."""
    if not isinstance(name, str):
        return False
    words = [w.lower() for w in re.findall(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+", name)]
    pairs = zip(words, words[1:], strict=False)
    return bool(SECRET_WORDS & set(words)) or any(a in KEY_QUALIFIERS and b == "key" for a, b in pairs)


def is_env_reference(value: object) -> bool:
    """The value reads the environment (`${oc.env:HF_TOKEN}`, `Bearer ${oc.env:TOKEN}`): it names a secret
    without holding it."""
    return isinstance(value, str) and ENV_REFERENCE.search(value) is not None


def redact(node: Any, key: object = None) -> Any:
    """A copy of `node` with every literal string under a credential-looking key replaced by `<redacted>`."""
    if isinstance(node, dict):
        return {k: redact(v, k) for k, v in node.items()}
    if isinstance(node, list):
        return [redact(v, key) for v in node]
    if isinstance(node, str) and node and is_credential_key(key) and not is_env_reference(node):
        return REDACTED
    return node


def holds_secrets(node: Any) -> bool:
    """Whether `redact` would hide anything: such a file is written readable by its owner only."""
    return redact(node) != node


def referenced_env(node: Any) -> set[str]:
    """The environment variables a config reads (`${oc.env:HF_TOKEN}` -> HF_TOKEN): what a job started elsewhere
    must be sent from the submitting environment."""
    if isinstance(node, dict):
        return {name for value in node.values() for name in referenced_env(value)}
    if isinstance(node, list):
        return {name for value in node for name in referenced_env(value)}
    if isinstance(node, str):
        return set(re.findall(r"\$\{\s*oc\.env:\s*([A-Za-z_][A-Za-z0-9_]*)", node))
    return set()
