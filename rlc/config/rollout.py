"""`actor_rollout_ref.rollout`: generation engine and sampling."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from rlc.config.base import Section, unimplemented


class SamplingKwargs(Section):
    top_k: int = -1
    top_p: float = Field(1.0, gt=0, le=1)
    temperature: float = Field(0.0, ge=0)
    n: int = Field(1, ge=1)
    do_sample: bool = False


class MultiTurn(Section):
    enable: bool = unimplemented(False, "multi-turn rollout is not implemented", error=True)
    max_assistant_turns: int | None = None
    tool_config_path: str | None = None


class EngineKwargs(Section):
    vllm: dict[str, Any] = {}
    sglang: dict[str, Any] = {}


class Rollout(Section):
    name: Literal["vllm", "hf", "sglang"] = "vllm"
    mode: Literal["sync", "async"] = unimplemented("sync", "async rollout (a rollout server) is not implemented",
                                                   error=True)
    temperature: float = Field(1.0, ge=0)
    top_k: int = -1
    top_p: float = Field(1.0, gt=0, le=1)
    do_sample: bool = True
    n: int = Field(1, ge=1)
    stop: list[str] = []
    prompt_length: int | None = Field(None, description="Defaults to data.max_prompt_length")
    response_length: int | None = Field(None, description="Defaults to data.max_response_length")
    dtype: Literal["bfloat16", "float16", "float32"] = "bfloat16"
    gpu_memory_utilization: float = Field(0.5, gt=0, le=1)
    ignore_eos: bool = False
    enforce_eager: bool = False
    free_cache_engine: bool = True
    load_format: str = "dummy"
    tensor_model_parallel_size: int = Field(2, ge=1)
    data_parallel_size: int = Field(1, ge=1)
    max_num_batched_tokens: int = Field(8192, gt=0)
    max_model_len: int | None = None
    max_num_seqs: int = Field(256, gt=0)
    enable_chunked_prefill: bool = True
    enable_prefix_caching: bool = True
    enable_sleep_mode: bool = True
    log_prob_micro_batch_size: int | None = Field(None, gt=0, description="Deprecated: global; use *_per_gpu")
    log_prob_micro_batch_size_per_gpu: int | None = Field(None, gt=0)
    log_prob_use_dynamic_bsz: bool | None = None
    log_prob_max_token_len_per_gpu: int | None = None
    disable_log_stats: bool = True
    calculate_log_probs: bool = True
    layered_summon: bool = False
    seed: int = 42
    engine_kwargs: EngineKwargs = EngineKwargs()
    val_kwargs: SamplingKwargs = SamplingKwargs()
    multi_turn: MultiTurn = MultiTurn()
    n_gpus_per_node: int = Field(0, ge=0, description=(
        "rlc: with actor_rollout_ref.hybrid_engine false, GPUs of each node that only generate, beside the "
        "trainer.n_gpus_per_node that train"))
    logprob_diff_tolerance: float = Field(
        0.5, gt=0, description="rlc: fail when the mean |vLLM - trainer| log-prob difference exceeds this"
    )
