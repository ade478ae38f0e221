"""Tiny models and tokenizers built locally, for tests and the CPU quickstart (nothing is downloaded).

The tokenizer is a byte-level BPE trained with `tokenizers` on the given texts, with a minimal chat template.
Models use head_dim 64 (vLLM's CPU attention rejects smaller heads) and any causal-LM family transformers has.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

CHAT_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'user' %}<|user|>{{ m['content'] }}"
    "{% elif m['role'] == 'assistant' %}<|assistant|>{{ m['content'] }}<|eos|>"
    "{% else %}<|system|>{{ m['content'] }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
SPECIAL = ["<|pad|>", "<|eos|>", "<|user|>", "<|assistant|>", "<|system|>"]


def build_tokenizer(texts: Iterable[str], vocab_size: int = 320) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    core.train_from_iterator(texts, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<|pad|>", eos_token="<|eos|>",
                                        bos_token=None, clean_up_tokenization_spaces=False)
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


FAMILIES = {
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM"),
    "llama": ("LlamaConfig", "LlamaForCausalLM"),
    "mistral": ("MistralConfig", "MistralForCausalLM"),
    "gemma": ("GemmaConfig", "GemmaForCausalLM"),
    "phi": ("Phi3Config", "Phi3ForCausalLM"),
}


def build_model(family: str = "qwen2", vocab_size: int = 320, hidden: int = 128, layers: int = 2,
                tie_embeddings: bool = True, eos_token_id: int = 1, pad_token_id: int = 0, seed: int = 0) -> Any:
    import torch
    import transformers

    config_name, model_name = FAMILIES[family]
    config = getattr(transformers, config_name)(
        vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=hidden // 64, num_key_value_heads=1, head_dim=64, max_position_embeddings=256,
        tie_word_embeddings=tie_embeddings, eos_token_id=eos_token_id, pad_token_id=pad_token_id,
        bos_token_id=None)
    torch.manual_seed(seed)
    return getattr(transformers, model_name)(config)
