"""Loading any `AutoModelForCausalLM` architecture (seed 002's generic path), always at the pinned revision.

One function per thing loaded, each passing `revision` to every `from_pretrained` (seed 000): config, model and
tokenizer. No family is special-cased: what transformers' Auto classes know (or a repo's own code, with
`trust_remote_code`) loads.

The critic is the model's backbone (`AutoModel`) plus a `Linear(hidden, 1)` value head, not
`AutoModelForTokenClassification`: transformers has a token-classification class for only about a third of its
causal-LM families (none for OLMo-2, Gemma-3, Cohere, DeepSeek-V2...), while every causal LM's backbone loads
with `AutoModel`. The wrapper names its parts `model.` and `score.` as transformers' token-classification
models do, so its state dict reads like verl's critic for the families where both exist.

A model that cannot load becomes one `ModelLoadError` that says which model, which revision and why (a missing
directory, an unknown architecture, a revision the repo does not have), with the next step to take.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

VALUE_HEAD_FILE = "value_head.safetensors"


class ModelLoadError(RuntimeError):
    """A model, config or tokenizer that cannot be loaded; the message is meant for the user as is."""


class ValueModel(torch.nn.Module):
    """A causal LM's backbone with a one-output head per token: `forward(...).logits` is [B, T, 1]."""

    def __init__(self, backbone: torch.nn.Module) -> None:
        super().__init__()
        self.model = backbone
        self.config = backbone.config
        hidden = self.config.get_text_config().hidden_size
        self.score = torch.nn.Linear(hidden, 1, bias=False, dtype=next(backbone.parameters()).dtype)
        # The same head on every rank (FSDP shards what each rank built), whatever the global RNG's state.
        seeded = torch.Generator().manual_seed(0)
        torch.nn.init.normal_(self.score.weight, std=getattr(self.config, "initializer_range", 0.02), generator=seeded)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, **kwargs: Any) -> Any:
        from transformers.modeling_outputs import TokenClassifierOutput

        kwargs.pop("logits_to_keep", None)  # the head is one column wide: scoring every position costs nothing
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                            **kwargs).last_hidden_state
        return TokenClassifierOutput(logits=self.score(hidden))

    def gradient_checkpointing_enable(self, **kwargs: Any) -> None:
        self.model.gradient_checkpointing_enable(**kwargs)

    def save_pretrained(self, directory: str | Path, state_dict: dict[str, torch.Tensor] | None = None) -> None:
        """The backbone as a Hugging Face folder plus the head in `value_head.safetensors` beside it."""
        from safetensors.torch import save_file

        state = state_dict if state_dict is not None else self.state_dict()
        backbone = {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}
        self.model.save_pretrained(directory, state_dict=backbone)
        save_file({"score.weight": state["score.weight"].detach().cpu().contiguous()},
                  str(Path(directory) / VALUE_HEAD_FILE))


def _describe(path: str, revision: str | None) -> str:
    return f"{path}" + (f" (revision {revision})" if revision else "")


def _load_error(what: str, path: str, revision: str | None, err: Exception) -> ModelLoadError:
    """One sentence for the usual ways loading fails; the library's own message for the rest."""
    name = type(err).__name__
    where = _describe(path, revision)
    looks_local = path.startswith(("/", "./", "../", "~")) or Path(path).expanduser().exists()
    if looks_local and not Path(path).expanduser().exists():
        return ModelLoadError(f"cannot load the {what} of {path}: no such directory")
    if name == "RevisionNotFoundError" or "is not a valid git identifier" in str(err):
        return ModelLoadError(f"cannot load the {what} of {path}: the repo has no revision {revision!r} "
                              "(a branch, tag or commit sha; see `rlc resolve`)")
    if name == "RepositoryNotFoundError":
        return ModelLoadError(f"cannot load the {what} of {where}: no such repo on the Hub, or it is private "
                              "(set HF_TOKEN)")
    if isinstance(err, (ValueError, KeyError)) and ("model type" in str(err) or "Unrecognized" in str(err)):
        return ModelLoadError(f"cannot load the {what} of {where}: its architecture is not known to this "
                              "transformers; upgrade transformers, or set model.trust_remote_code: true if the "
                              f"repo ships its own code ({name}: {_first_line(err)})")
    return ModelLoadError(f"cannot load the {what} of {where}: {name}: {_first_line(err)}")


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else "(no message)"


def load_config(model_cfg: Any) -> Any:
    """The model's config (from `hf_config_path` when set) with `override_config` applied."""
    from transformers import AutoConfig

    path = model_cfg.hf_config_path or model_cfg.path
    try:
        config = AutoConfig.from_pretrained(path, revision=model_cfg.revision,
                                            trust_remote_code=model_cfg.trust_remote_code)
    except Exception as err:  # transformers raises OSError, ValueError, KeyError, hub errors... for one cause
        raise _load_error("config", path, model_cfg.revision, err) from None
    for key, value in _config_overrides(model_cfg).items():
        setattr(config, key, value)
    return config


def _config_overrides(model_cfg: Any) -> dict[str, Any]:
    return {k: v for k, v in (model_cfg.override_config or {}).items() if k != "attn_implementation"}


def load_tokenizer(model_cfg: Any) -> Any:
    """The tokenizer (from `tokenizer_path` at `tokenizer_revision` when set), with a pad token guaranteed."""
    from transformers import AutoTokenizer

    path = model_cfg.tokenizer_path or model_cfg.path
    revision = model_cfg.tokenizer_revision if model_cfg.tokenizer_path else model_cfg.revision
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, revision=revision,
                                                  trust_remote_code=model_cfg.trust_remote_code)
    except Exception as err:  # noqa: BLE001 - see load_config
        raise _load_error("tokenizer", path, revision, err) from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if model_cfg.custom_chat_template:
        tokenizer.chat_template = model_cfg.custom_chat_template
    return tokenizer


def load_causal_lm(model_cfg: Any, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
                   for_critic: bool = False) -> torch.nn.Module:
    """The policy, or with `for_critic` its backbone under a value head (`ValueModel`), on `device`.

    `model_cfg` is a `ModelConfig` (`path`, `revision`, `trust_remote_code`, `override_config`, ...).
    `override_config: {attn_implementation: ...}` picks the attention kernel instead of setting a config field.
    """
    from transformers import AutoModel, AutoModelForCausalLM

    config = load_config(model_cfg)
    kwargs: dict[str, Any] = {"config": config, "revision": model_cfg.revision, "dtype": dtype,
                              "trust_remote_code": model_cfg.trust_remote_code}
    if "attn_implementation" in (model_cfg.override_config or {}):
        kwargs["attn_implementation"] = model_cfg.override_config["attn_implementation"]
    auto = AutoModel if for_critic else AutoModelForCausalLM
    try:
        model = auto.from_pretrained(model_cfg.path, **kwargs)
    except Exception as err:  # noqa: BLE001 - see load_config
        raise _load_error("critic backbone" if for_critic else "model", model_cfg.path, model_cfg.revision,
                          err) from None
    if for_critic:
        model = ValueModel(model)
        _load_value_head(model, model_cfg.path)
    return model.to(device)


def _load_value_head(model: ValueModel, path: str) -> None:
    """A head saved by `ValueModel.save_pretrained` (a local folder only); a fresh head otherwise."""
    head = Path(path).expanduser() / VALUE_HEAD_FILE
    if head.is_file():
        from safetensors.torch import load_file

        with torch.no_grad():
            model.score.weight.copy_(load_file(str(head))["score.weight"])
