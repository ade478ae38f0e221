"""Loading any `AutoModelForCausalLM` architecture (seed 002's generic path), always at the pinned revision.

One function per thing loaded, each passing `revision` to `from_pretrained` (seed 000). A model that cannot
load becomes one `ModelLoadError` that says which model, which revision, and why.
"""

from __future__ import annotations

from typing import Any

import torch


class ModelLoadError(RuntimeError):
    pass


def _describe(model_cfg: Any) -> str:
    return f"{model_cfg.path}" + (f" at revision {model_cfg.revision}" if model_cfg.revision else "")


def load_tokenizer(model_cfg: Any) -> Any:
    from transformers import AutoTokenizer

    path = model_cfg.tokenizer_path or model_cfg.path
    revision = model_cfg.tokenizer_revision if model_cfg.tokenizer_path else model_cfg.revision
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, revision=revision,
                                                  trust_remote_code=model_cfg.trust_remote_code)
    except Exception as err:  # transformers raises OSError, ValueError, KeyError... for a bad checkpoint
        raise ModelLoadError(f"cannot load the tokenizer of {path}: {type(err).__name__}: {err}") from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if model_cfg.custom_chat_template:
        tokenizer.chat_template = model_cfg.custom_chat_template
    return tokenizer


def load_config(model_cfg: Any) -> Any:
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(model_cfg.hf_config_path or model_cfg.path, revision=model_cfg.revision,
                                            trust_remote_code=model_cfg.trust_remote_code)
    except Exception as err:  # noqa: BLE001 - see load_tokenizer
        raise ModelLoadError(f"cannot load the config of {_describe(model_cfg)}: {type(err).__name__}: {err}") \
            from None
    for key, value in model_cfg.override_config.items():
        setattr(config, key, value)
    return config


def load_causal_lm(model_cfg: Any, dtype: torch.dtype = torch.float32, for_critic: bool = False) -> Any:
    """The policy (or, `for_critic`, the same backbone with a one-output value head per token)."""
    from transformers import AutoModelForCausalLM, AutoModelForTokenClassification

    config = load_config(model_cfg)
    if for_critic:
        config.num_labels = 1
        config.classifier_dropout = 0.0
    auto = AutoModelForTokenClassification if for_critic else AutoModelForCausalLM
    try:
        return auto.from_pretrained(model_cfg.path, config=config, revision=model_cfg.revision, dtype=dtype,
                                    trust_remote_code=model_cfg.trust_remote_code)
    except Exception as err:  # noqa: BLE001 - see load_tokenizer
        kind = "critic (value head)" if for_critic else "model"
        raise ModelLoadError(f"cannot load the {kind} {_describe(model_cfg)}: {type(err).__name__}: {err}") from None
