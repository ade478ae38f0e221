"""The megatron-core model for a Hugging Face Llama / Qwen2 / Qwen3 / Mistral / Qwen2-MoE / Qwen3-MoE config.

Which model class. megatron-core 0.19 marks `GPTModel` deprecated ("only accepting critical bug fixes") in favour of
`HybridModel` (megatron/core/models/hybrid), which spells a dense transformer as the layer pattern `*-` repeated:
each GPT layer becomes an attention layer and an MLP layer. But in 0.19.2 `HybridModel` cannot be built without
Transformer Engine: `HybridStack` creates its final norm as `TENorm` unconditionally and the only shipped stack
specs are TE specs. Neither our CI machine nor our GPU host has Transformer Engine (checked: not importable there),
and 0.16 (Python 3.11) has no `HybridModel`. So `build_model` uses `HybridModel` when the installed megatron-core
has it *and* Transformer Engine is importable, and otherwise `GPTModel` with `get_gpt_layer_local_spec` (plain
torch modules: `torch.nn.RMSNorm`, `ColumnParallelLinear`/`RowParallelLinear`, `DotProductAttention`), which runs
on both 0.16.1 and 0.19.2. `megatron_layout()` tells the converter which parameter names to produce.

What the Hugging Face config maps to: RMSNorm (`normalization`, `layernorm_epsilon`), SwiGLU (`gated_linear_unit`
with `silu`), no linear biases except Qwen2's q/k/v (`add_qkv_bias`), GQA (`num_query_groups`), `head_dim`
(`kv_channels`), rotary embeddings with the model's theta and `linear` or `llama3` scaling (GPTModel arguments,
not config fields), tied embeddings (`share_embeddings_and_output_weights`), a vocabulary padded by megatron's rule,
Qwen3's per-head q/k RMSNorm (`qk_layernorm`).

Mixture of experts (Qwen2-MoE, Qwen3-MoE), as verl's `config_converter` sets it up, on the local spec's MoE layer
(`SequentialMLP` experts, no grouped GEMM: that needs Transformer Engine): `num_moe_experts`, `moe_router_topk`,
`moe_ffn_hidden_size`; a softmax router whose top-k probabilities are renormalised exactly when the model's
`norm_topk_prob` says so (megatron's top-k-then-softmax equals softmax-then-renormalise; `moe_router_pre_softmax`
is softmax-then-top-k without renormalising); Qwen2-MoE's shared expert with its sigmoid gate
(`moe_shared_expert_intermediate_size`, `moe_shared_expert_gate`); the all-to-all token dispatcher, as verl uses.
No load-balancing loss (`moe_router_load_balancing_type="none"`), as verl sets it ("it hurts perf in RL"), and as
the FSDP engine trains (transformers adds the aux loss only with `output_router_logits`).
No token dropping (no capacity factor): every token reaches its top-k experts, as in the Hugging Face model.
MoE models train at tensor parallel 1 only (`rlc.megatron_arch` refuses more): megatron's MoE layer refuses to train
under TP without sequence parallelism, which the local spec's torch norms refuse; experts split over EP instead.
The rules on what is refused live in the compiler's torch-free `rlc.megatron_arch`, shared with validation.
"""

from __future__ import annotations

import copy
import importlib.util
from typing import Any

import torch
import torch.nn.functional as F
from megatron.core import parallel_state
from megatron.core.transformer import TransformerConfig
from megatron.core.transformer.spec_utils import ModuleSpec

from rlc.megatron_arch import (
    MAKE_VOCAB_SIZE_DIVISIBLE_BY,
    num_experts,
    padded_vocab_size,
    qk_layernorm,
    qkv_bias,
    rope_settings,
    unsupported_reasons,
)
from rlc_runtime.engines.megatron_convert import Layout


def _define_missing_te_gemm() -> None:
    """megatron-core 0.16 imports `te_general_gemm` only when Transformer Engine is installed, yet its MoE router
    tests `te_general_gemm is not None` (NameError without TE). Later releases define it as None when TE is
    absent; so do we, which selects megatron's own torch matmul."""
    from megatron.core.transformer.moe import moe_utils

    if not hasattr(moe_utils, "te_general_gemm"):
        moe_utils.te_general_gemm = None


_define_missing_te_gemm()


class UnsupportedModelError(ValueError):
    """The Hugging Face model cannot be trained with the Megatron backend (the message says why)."""


def check_supported(hf_config: Any, tp: int = 1, pp: int = 1, ep: int = 1, etp: int | None = None) -> None:
    """Raise UnsupportedModelError naming every problem (and the supported architectures) for this config."""
    reasons = unsupported_reasons(hf_config.to_dict(), tp, pp, ep, etp)
    if reasons:
        name = getattr(hf_config, "_name_or_path", "") or "this model"
        raise UnsupportedModelError(f"cannot train {name} with backend: megatron: " + "; ".join(reasons))


def megatron_layout() -> Layout:
    """The converter layout to use: "hybrid" when `build_model` builds a HybridModel (module docstring), else "gpt"."""
    has_hybrid = importlib.util.find_spec("megatron.core.models.hybrid") is not None
    return "hybrid" if has_hybrid and importlib.util.find_spec("transformer_engine") is not None else "gpt"


def transformer_config_from_hf(hf_config: Any, tp: int, pp: int, params_dtype: torch.dtype, ep: int = 1,
                               etp: int | None = None, **overrides: Any) -> TransformerConfig:
    """The TransformerConfig for `hf_config` at these parallel sizes (expert-tensor parallel defaults to tensor
    parallel); `overrides` set any other field (use_cpu_initialization, sequence_parallel, recompute_granularity)."""
    check_supported(hf_config, tp, pp, ep, etp)
    heads = hf_config.num_attention_heads
    hybrid = megatron_layout() == "hybrid"
    fields: dict[str, Any] = dict(
        num_layers=hf_config.num_hidden_layers * (2 if hybrid else 1),
        hidden_size=hf_config.hidden_size,
        ffn_hidden_size=hf_config.intermediate_size,
        num_attention_heads=heads,
        num_query_groups=getattr(hf_config, "num_key_value_heads", None) or heads,
        kv_channels=getattr(hf_config, "head_dim", None) or hf_config.hidden_size // heads,
        normalization="RMSNorm",
        layernorm_epsilon=hf_config.rms_norm_eps,
        gated_linear_unit=True,
        activation_func=F.silu,
        add_bias_linear=False,
        add_qkv_bias=qkv_bias(hf_config.to_dict()),
        qk_layernorm=qk_layernorm(hf_config.to_dict()),
        hidden_dropout=0.0,
        attention_dropout=float(getattr(hf_config, "attention_dropout", 0.0) or 0.0),
        init_method_std=getattr(hf_config, "initializer_range", 0.02),
        attention_softmax_in_fp32=True,
        tensor_model_parallel_size=tp,
        pipeline_model_parallel_size=pp,
        params_dtype=params_dtype,
        pipeline_dtype=params_dtype,
        bf16=params_dtype == torch.bfloat16,
        fp16=params_dtype == torch.float16,
    )
    if hybrid:
        fields["is_hybrid_model"] = True
    fields.update(_moe_fields(hf_config, ep, etp))
    fields.update(overrides)
    return TransformerConfig(**fields)


def _moe_fields(hf_config: Any, ep: int, etp: int | None) -> dict[str, Any]:
    """TransformerConfig's mixture-of-experts fields (module docstring); none for a dense model."""
    experts = num_experts(hf_config.to_dict())
    if not experts:
        return {}
    shared = getattr(hf_config, "shared_expert_intermediate_size", None) if hf_config.model_type == "qwen2_moe" \
        else None
    return dict(num_moe_experts=experts, moe_router_topk=hf_config.num_experts_per_tok,
                moe_ffn_hidden_size=hf_config.moe_intermediate_size, moe_router_score_function="softmax",
                moe_router_pre_softmax=not getattr(hf_config, "norm_topk_prob", False),
                moe_router_load_balancing_type="none", moe_aux_loss_coeff=0.0, moe_token_dispatcher_type="alltoall",
                moe_grouped_gemm=False, moe_shared_expert_intermediate_size=shared or None,
                moe_shared_expert_gate=bool(shared), expert_model_parallel_size=ep,
                expert_tensor_parallel_size=etp)


def rope_kwargs(hf_config: Any) -> dict[str, Any]:
    """GPTModel's rotary-embedding arguments for the model's theta and (supported) scaling."""
    theta, scaling = rope_settings(hf_config.to_dict())
    kwargs: dict[str, Any] = {"position_embedding_type": "rope", "rotary_percent": 1.0, "rotary_base": theta}
    if scaling["rope_type"] == "linear":
        kwargs["seq_len_interpolation_factor"] = float(scaling["factor"])
    elif scaling["rope_type"] == "llama3":
        kwargs.update(rope_scaling=True, rope_scaling_factor=float(scaling["factor"]))
    return kwargs


def build_model(hf_config: Any, tp: int, pp: int, params_dtype: torch.dtype, *, ep: int = 1, etp: int | None = None,
                pre_process: bool | None = None, post_process: bool | None = None,
                make_vocab_size_divisible_by: int = MAKE_VOCAB_SIZE_DIVISIBLE_BY,
                **overrides: Any) -> torch.nn.Module:
    """This rank's model chunk (megatron's model-parallel state must be initialised with the same sizes). Weights
    are random: load them with `load_shard(model, megatron_convert.hf_to_megatron(...))`."""
    config = transformer_config_from_hf(hf_config, tp, pp, params_dtype, ep, etp, **overrides)
    common = dict(
        config=config,
        vocab_size=padded_vocab_size(hf_config.vocab_size, tp, make_vocab_size_divisible_by),
        max_sequence_length=hf_config.max_position_embeddings,
        pre_process=parallel_state.is_pipeline_first_stage() if pre_process is None else pre_process,
        post_process=parallel_state.is_pipeline_last_stage() if post_process is None else post_process,
        share_embeddings_and_output_weights=bool(getattr(hf_config, "tie_word_embeddings", False)),
        **rope_kwargs(hf_config),
    )
    if megatron_layout() == "hybrid":
        if config.context_parallel_size > 1:
            raise UnsupportedModelError("context parallelism is implemented for the local layer spec (GPTModel "
                                        "without Transformer Engine); rlc does not wire it for HybridModel")
        return _build_hybrid(hf_config, pp, common)
    from megatron.core.models.gpt import GPTModel

    return GPTModel(transformer_layer_spec=gpt_layer_spec(config), **common)


def gpt_layer_spec(config: TransformerConfig) -> ModuleSpec:
    """The layer spec GPTModel is built with: megatron-core's own modules, RMSNorm (no Transformer Engine), the
    local MoE layer (sequential experts) when the model has experts; under context parallelism, rlc's core
    attention in place of the local one, which refuses it (`megatron_cp`)."""
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec

    spec = get_gpt_layer_local_spec(num_experts=config.num_moe_experts, moe_grouped_gemm=False,
                                    qk_layernorm=config.qk_layernorm, normalization="RMSNorm")
    if config.context_parallel_size > 1:
        from rlc_runtime.engines.megatron_cp import ContextParallelAttention

        spec = copy.deepcopy(spec)
        spec.submodules.self_attention.submodules.core_attention = ContextParallelAttention
    return spec


def _build_hybrid(hf_config: Any, pp: int, common: dict[str, Any]) -> torch.nn.Module:
    from megatron.core.models.hybrid.hybrid_layer_specs import hybrid_stack_spec
    from megatron.core.models.hybrid.hybrid_model import HybridModel

    if common["config"].num_moe_experts or common["config"].qk_layernorm:
        raise UnsupportedModelError("MoE and q/k-norm models are built as GPTModel; rlc's HybridModel path (with "
                                    "Transformer Engine) does not map them")
    if common.pop("rope_scaling", False):
        raise UnsupportedModelError("llama3 rope scaling needs GPTModel; HybridModel has no such option")
    common.pop("rope_scaling_factor", None)
    pattern = "|".join(["*-" * (hf_config.num_hidden_layers // pp)] * pp)
    return HybridModel(hybrid_stack_spec=hybrid_stack_spec, hybrid_layer_pattern=pattern, **common)


def load_shard(model: torch.nn.Module, shard: dict[str, torch.Tensor]) -> None:
    """Copy a converted shard into the model; every parameter must be covered and no name may be left over.

    `_extra_state` entries (megatron's per-linear metadata, None for the local spec) are the only keys allowed
    to be absent.
    """
    missing, unexpected = model.load_state_dict(shard, strict=False)
    missing = [k for k in missing if not k.endswith("._extra_state")]
    if missing or unexpected:
        raise ValueError(f"converted weights do not match the megatron model: missing {missing}, "
                         f"unexpected {unexpected}")
