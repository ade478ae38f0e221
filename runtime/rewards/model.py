"""A reward model's score of one response: its own chat template over prompt + response, micro-batched forwards.

As verl's reward-model worker does when `input_tokenizer` is set, the response is text (decoded with the policy's
tokenizer) and the chat is re-rendered with the reward model's tokenizer, so a policy and a reward model of
different families agree on nothing but text. Two heads are understood, read from config.json's `architectures`:
`*ForSequenceClassification` (transformers pools the logit of the rightmost non-pad token, the pooling such
models are trained with) and verl's `*ForTokenClassification` (the logit of the last real token, as verl takes it).
"""

from __future__ import annotations

from typing import Any

import torch

from rlc.config.reward import REWARD_MODEL_HEADS
from rlc_runtime.models import ModelLoadError, _load_error


def head_of(architectures: list[str] | None) -> str | None:
    """Which scoring head config.json's architectures name, or None for a model that is not a classifier."""
    for name in architectures or []:
        for suffix, head in REWARD_MODEL_HEADS.items():
            if name.endswith(suffix):
                return head
    return None


def load_reward_model(model_cfg: Any, dtype: torch.dtype) -> tuple[torch.nn.Module, Any, str]:
    """(model in eval mode on the CPU, tokenizer with a pad token, head) of `reward_model.model`."""
    from transformers import (
        AutoConfig,
        AutoModelForSequenceClassification,
        AutoModelForTokenClassification,
        AutoTokenizer,
    )

    path, trust = model_cfg.path, model_cfg.trust_remote_code
    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust)
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust)
    except Exception as err:  # noqa: BLE001 - transformers raises many types for one cause; one sentence for each
        raise _load_error("reward model", path, None, err) from None
    for key, value in (model_cfg.override_config or {}).items():
        setattr(config, key, value)
    head = head_of(getattr(config, "architectures", None))
    if head is None:
        raise ModelLoadError(f"reward_model.model.path {path}: {config.architectures} is not a sequence- or "
                             "token-classification model (config.json architectures)")
    if not tokenizer.chat_template:
        raise ModelLoadError(f"reward_model.model.path {path}: its tokenizer has no chat template to render "
                             "prompt + response with")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    config.pad_token_id = tokenizer.pad_token_id
    cls = AutoModelForSequenceClassification if head == "sequence" else AutoModelForTokenClassification
    try:
        model = cls.from_pretrained(path, config=config, torch_dtype=dtype, trust_remote_code=trust)
    except Exception as err:  # noqa: BLE001 - see above
        raise _load_error("reward model", path, None, err) from None
    return model.eval(), tokenizer, head


def reward_input_ids(tokenizer: Any, messages: list[dict[str, Any]], response: str,
                     max_length: int | None) -> list[int]:
    """The reward model's token ids of the chat `messages` + the response as the assistant's turn, cut on the
    right to `max_length`. The template writes every special token it wants (a BOS included), so tokenizing adds
    none, as verl's reward-model worker does."""
    chat = [*messages, {"role": "assistant", "content": response}]
    text = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=False)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return ids[:max_length] if max_length else ids


@torch.no_grad()
def score_ids(model: torch.nn.Module, head: str, sequences: list[list[int]], pad_id: int,
              micro_batch_size: int | None, device: str) -> list[float]:
    """One score per sequence, forwarded `micro_batch_size` at a time (all at once when None), right-padded."""
    size = micro_batch_size or max(1, len(sequences))
    scores: list[float] = []
    for start in range(0, len(sequences), size):
        part = sequences[start:start + size]
        width = max(len(ids) for ids in part)
        input_ids = torch.tensor([ids + [pad_id] * (width - len(ids)) for ids in part], device=device)
        mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids in part], device=device)
        logits = model(input_ids=input_ids, attention_mask=mask, use_cache=False).logits.float()
        if head == "token":  # (batch, seq, 1): the last real token's, as verl reads it
            logits = logits[torch.arange(len(part), device=device), mask.sum(-1) - 1]
        scores += logits[:, 0].tolist()
    return scores


def shard(model: torch.nn.Module, device: str, world_size: int) -> torch.nn.Module:
    """FSDP2 over all `world_size` ranks, one unit per decoder layer as the training engine shards (no mixed
    precision policy: the reward model is loaded in the dtype it runs in)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    from rlc_runtime.engines.fsdp import _decoder_layers

    mesh = init_device_mesh(device, (world_size,))
    for layer in _decoder_layers(model):
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)  # moves what is still on the CPU onto the mesh's device
    return model
