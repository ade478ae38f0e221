"""Which Hugging Face checkpoints the Megatron backend can train, decided from `config.json` alone.

This module imports nothing beyond the standard library on purpose: the compiler (which must never import torch)
calls `unsupported_reasons` at validation time, so a config that the runtime would refuse fails before anything is
launched; `megatron_model.check_supported` runs the same rules at load time. One set of rules, two callers.

What is supported is what the converter and the megatron-core model builder implement and test: the Llama, Qwen2,
Qwen3 and Mistral families as dense decoders, and Qwen2-MoE / Qwen3-MoE as mixture-of-experts decoders (every layer
an MoE layer), with RMSNorm, SwiGLU, rotary embeddings (plain, `linear` or `llama3` scaling with megatron's fixed
llama3 constants), grouped-query attention, Qwen2's q/k/v bias, Qwen3's q/k RMSNorm, Qwen2-MoE's gated shared
expert, tied or untied embeddings. Anything else is refused with a message that says what is supported, rather
than trained wrongly.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

SUPPORTED_ARCHITECTURES = ("LlamaForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM", "MistralForCausalLM",
                           "Qwen2MoeForCausalLM", "Qwen3MoeForCausalLM")
_MODEL_TYPES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM",
                "mistral": "MistralForCausalLM", "qwen2_moe": "Qwen2MoeForCausalLM", "qwen3_moe": "Qwen3MoeForCausalLM"}
# Families whose config has `use_sliding_window` (off unless set) rather than Mistral's always-on `sliding_window`.
_OPTIONAL_WINDOW = ("qwen2", "qwen3", "qwen2_moe", "qwen3_moe")
SUPPORTED_ROPE_TYPES = ("default", "linear", "llama3")
# megatron-core's RotaryEmbedding._apply_scaling hard-codes these llama3 constants (0.16 to 0.19).
MEGATRON_LLAMA3_ROPE = {"low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
# megatron's rule (megatron/training/tokenizer): the vocabulary is padded to a multiple of this times TP.
MAKE_VOCAB_SIZE_DIVISIBLE_BY = 128


def rope_settings(config: Mapping[str, Any]) -> tuple[float, dict[str, Any]]:
    """(theta, scaling) from either transformers 5's `rope_parameters` or the older `rope_theta`/`rope_scaling`."""
    params = config.get("rope_parameters") or {}
    legacy = config.get("rope_scaling") or {}
    theta = params.get("rope_theta", config.get("rope_theta", 10000.0))
    scaling = {**legacy, **params}
    scaling.setdefault("rope_type", scaling.get("type", "default"))
    return float(theta), scaling


def attention_window(config: Mapping[str, Any]) -> int | None:
    """The sliding attention window a model uses, if any (Mistral's `sliding_window`, Qwen2's when enabled).

    The Megatron model attends over the full causal context, which equals sliding-window attention only while
    prompt + response fit in the window: callers must keep sequences at most this long.
    """
    if config.get("model_type") in _OPTIONAL_WINDOW:
        return config.get("sliding_window") if config.get("use_sliding_window") else None
    return config.get("sliding_window")


def padded_vocab_size(vocab_size: int, tp_size: int, divisible_by: int = MAKE_VOCAB_SIZE_DIVISIBLE_BY) -> int:
    """Vocabulary size after megatron's padding, so that each TP rank holds an equal, aligned slice."""
    multiple = divisible_by * tp_size
    return -(-vocab_size // multiple) * multiple


def num_experts(config: Mapping[str, Any]) -> int:
    """Routed experts per MoE layer; 0 for a dense model. (transformers 5 writes Qwen3-MoE's as
    `num_local_experts`; released config.json files say `num_experts`.)"""
    if config.get("model_type") not in ("qwen2_moe", "qwen3_moe"):
        return 0
    return int(config.get("num_experts") or config.get("num_local_experts") or 0)


def qk_layernorm(config: Mapping[str, Any]) -> bool:
    """Qwen3's RMSNorm of each query and key head before rotary embedding (megatron's `qk_layernorm`)."""
    return config.get("model_type") in ("qwen3", "qwen3_moe")


def qkv_bias(config: Mapping[str, Any]) -> bool:
    """Whether the q/k/v projections carry a bias (megatron's `add_qkv_bias`)."""
    kind = config.get("model_type")
    return kind == "qwen2" or (kind == "qwen2_moe" and bool(config.get("qkv_bias", True)))


def unsupported_reasons(config: Mapping[str, Any], tp_size: int = 1, pp_size: int = 1, ep_size: int = 1,
                        etp_size: int | None = None) -> list[str]:
    """Every reason the Megatron backend cannot train this `config.json` at these tensor, pipeline, expert and
    expert-tensor parallel sizes (expert-tensor parallel defaults to tensor parallel, as in megatron); empty when
    it can."""
    # A config.json written by save_pretrained names its architectures; one built in code may only have model_type.
    architectures = list(config.get("architectures") or [_MODEL_TYPES.get(config.get("model_type"), "")])
    architectures = [a for a in architectures if a]
    if not any(a in SUPPORTED_ARCHITECTURES for a in architectures):
        got = ", ".join(architectures) or "none listed"
        return [f"architecture {got} is not supported by backend: megatron; supported: "
                f"{', '.join(SUPPORTED_ARCHITECTURES)}"]
    reasons: list[str] = []
    _, scaling = rope_settings(config)
    rope_type = scaling["rope_type"]
    if rope_type not in SUPPORTED_ROPE_TYPES:
        reasons.append(f"rope scaling type {rope_type!r} is not supported by megatron-core's rotary embedding; "
                       f"supported: {', '.join(SUPPORTED_ROPE_TYPES)}")
    elif rope_type == "llama3":
        differing = {k: scaling.get(k) for k, v in MEGATRON_LLAMA3_ROPE.items() if float(scaling.get(k, v)) != v}
        if differing:
            reasons.append(f"llama3 rope scaling with {differing} differs from megatron-core's fixed "
                           f"{MEGATRON_LLAMA3_ROPE}")
    if config.get("hidden_act", "silu") != "silu":
        reasons.append(f"hidden_act {config.get('hidden_act')!r} is not supported; the MLP must be SwiGLU (silu)")
    if config.get("attention_bias") or config.get("mlp_bias"):
        reasons.append("attention_bias/mlp_bias on Llama/Mistral/Qwen3 layers are not supported (megatron-core "
                       "would add a bias to every linear layer)")
    heads, groups = config.get("num_attention_heads", 0), config.get("num_key_value_heads") or 0
    groups = groups or heads
    if groups % tp_size or heads % tp_size:
        reasons.append(f"tensor parallel size {tp_size} must divide num_attention_heads ({heads}) and "
                       f"num_key_value_heads ({groups})")
    experts = num_experts(config)
    if not experts and config.get("intermediate_size", 0) % tp_size:
        reasons.append(f"tensor parallel size {tp_size} must divide intermediate_size "
                       f"({config.get('intermediate_size')})")
    if experts:
        reasons += _moe_reasons(config, experts, tp_size, ep_size, tp_size if etp_size is None else etp_size)
    elif ep_size > 1:
        reasons.append(f"expert parallel size {ep_size} needs a mixture-of-experts model; this one is dense")
    if config.get("num_hidden_layers", 0) % pp_size:
        reasons.append(f"pipeline parallel size {pp_size} must divide num_hidden_layers "
                       f"({config.get('num_hidden_layers')})")
    return reasons


def _moe_reasons(config: Mapping[str, Any], experts: int, tp_size: int, ep_size: int, etp_size: int) -> list[str]:
    reasons: list[str] = []
    layers = config.get("num_hidden_layers", 0)
    dense = list(config.get("mlp_only_layers") or [])
    step = config.get("decoder_sparse_step") or 1
    if dense or step != 1:
        reasons.append(f"dense MLP layers between MoE layers (mlp_only_layers {dense}, decoder_sparse_step {step}) "
                       f"are not supported by backend: megatron; every one of the {layers} layers must be MoE")
    if tp_size > 1:
        # megatron-core's MoE layer refuses to train under tensor parallelism without sequence parallelism, and its
        # torch norms (the local spec; rlc runs without Transformer Engine) refuse sequence parallelism.
        reasons.append(f"tensor parallel size {tp_size} with a mixture-of-experts model needs megatron sequence "
                       "parallelism, which needs Transformer Engine (megatron-core's torch norms refuse it): use "
                       "tensor_model_parallel_size 1 and split the experts with expert_model_parallel_size")
    if experts % ep_size:
        reasons.append(f"expert parallel size {ep_size} must divide num_experts ({experts})")
    if config.get("moe_intermediate_size", 0) % etp_size:
        reasons.append(f"expert tensor parallel size {etp_size} must divide moe_intermediate_size "
                       f"({config.get('moe_intermediate_size')})")
    shared = config.get("shared_expert_intermediate_size") or 0 if config.get("model_type") == "qwen2_moe" else 0
    if shared % tp_size:
        reasons.append(f"tensor parallel size {tp_size} must divide shared_expert_intermediate_size ({shared})")
    return reasons
