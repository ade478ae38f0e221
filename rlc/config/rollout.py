"""`actor_rollout_ref.rollout`: generation engine and sampling (verl's keys; each key's status is on the key)."""

from typing import Any, Literal

from pydantic import Field

from rlc.config.base import Section, instead, partly, refused
from rlc.config.engine import Profiler, Qat
from rlc.config.model import Mtp

ROLLOUT_ENGINES = ("vllm", "hf", "sglang", "trtllm")
IMPLEMENTED_ROLLOUT_ENGINES = ("vllm", "hf")
AGENT_LOOP = ("custom agent loops are not implemented in rlc; async mode runs the single-turn loop, or the tool loop "
              "with multi_turn.enable")
NOT_SGLANG = "used only by the sglang and trtllm rollouts; rlc rolls out with vLLM"
VLLM_DEFAULT = "rlc leaves this to vLLM's default"
SERVER = ("verl 0.9.1 keeps these SGLang server settings in its RolloutConfig, but none of its code reads them; rlc "
          "runs vLLM's engine in the rollout workers, with no HTTP server between")


def _vllm_instead(engine: str, key: str) -> tuple[str, str]:
    """What rlc runs in place of another rollout engine, and what differs (see `partly`'s substitutes)."""
    return "vllm", (f"the same sampling settings through vLLM ({engine} itself is not implemented in rlc); its "
                    f"engine-specific keys (engine_kwargs.{key}) do nothing, and throughput and memory use differ")


class SamplingKwargs(Section):
    """Sampling for validation."""

    top_k: int = -1
    """Sample from the k most likely tokens (-1: all)."""
    top_p: float = Field(1.0, gt=0, le=1)
    """Nucleus sampling: the smallest token set with this much probability."""
    temperature: float = Field(0.0, ge=0)
    """Softmax temperature (0 with do_sample false: greedy)."""
    n: int = Field(1, ge=1)
    """Responses per validation prompt."""
    do_sample: bool = False
    """Sample; false decodes greedily."""


class MultiTurn(Section):
    """Multi-turn rollout with tools and interactions."""

    enable: bool = False
    """Roll out conversations of several assistant turns, with tool calls (needs mode async; the trajectories are
    saved with trainer.rollout_data_dir)."""
    max_assistant_turns: int | None = Field(None, ge=1)
    """Most assistant turns per conversation."""
    tool_config_path: str | None = None
    """YAML file declaring the tools (verl's format: class_name, config, tool_schema)."""
    function_tool_path: str | None = refused(None, "tools from typed Python functions are not implemented in rlc; "
                                                   "declare them in tool_config_path")
    """Python file whose typed, documented functions become tools."""
    max_user_turns: int | None = Field(None, ge=0)
    """Most user turns per conversation."""
    max_parallel_calls: int = Field(1, ge=1)
    """Tool calls run at once per turn (the first ones of the turn; the others are dropped)."""
    max_tool_response_length: int = Field(256, ge=1)
    """Longest tool response kept, in characters (as verl counts)."""
    tool_response_truncate_side: Literal["left", "right", "middle"] = "middle"
    """Which part of a long tool response is cut."""
    interaction_config_path: str | None = None
    """YAML file declaring the interaction (simulated user)."""
    use_inference_chat_template: bool = instead(False, "rlc renders every turn with the tokenizer's chat template",
                                                only_with=".enable")
    """Use the model's inference chat template rather than the training one."""
    tokenization_sanity_check_mode: str = instead("strict", "rlc does not re-tokenize conversations to compare",
                                                  only_with=".enable")
    """How strictly incremental tokenization is checked against full re-tokenization."""
    format: str = partly("hermes", ("hermes",), "rlc parses tool calls in the hermes format only", substitutes={
        "qwen": ("hermes", "verl 0.9.1's agent loop has no parser named qwen (only hermes and gpt-oss: it stops with "
                           "'Unknown tool parser: qwen'); older verl handed the name to SGLang, whose Qwen 2.5 format "
                           "is hermes' <tool_call>{\"name\": ..., \"arguments\": ...}</tool_call>, which rlc parses")})
    """Tool-call format: hermes (`<tool_call>{json}</tool_call>`, Qwen's and NousResearch's) or gpt-oss."""
    num_repeat_rollouts: int | None = instead(None, "rlc's multi-turn rollout does not repeat interactions",
                                              only_with=".enable")
    """Repeat each interaction this many times."""


class CustomAsyncServer(Section):
    """A custom async rollout server class."""

    path: str | None = refused(None, AGENT_LOOP)
    """File defining the server class."""
    name: str | None = refused(None, AGENT_LOOP)
    """Name of that class."""


class AgentLoop(Section):
    """verl's agent loop: the workers that turn a prompt into a trajectory in async mode."""

    num_workers: int = instead(8, "rlc runs the agent loops as coroutines inside each rollout worker")
    """Agent-loop worker processes."""
    default_agent_loop: str = partly("single_turn_agent", ("single_turn_agent",), AGENT_LOOP)
    """Agent loop of samples that do not name one."""
    agent_loop_config_path: str | None = refused(None, AGENT_LOOP)
    """YAML file registering custom agent loops."""
    custom_async_server: CustomAsyncServer = CustomAsyncServer()
    """A custom server class."""


class CheckpointEngine(Section):
    """How updated weights reach the rollout engine."""

    backend: str = partly("naive", ("naive", "nccl"), "rlc chooses the transfer by placement: in place when "
                          "colocated, a bucketed broadcast over NCCL (gloo on CPU) from training rank 0 when "
                          "hybrid_engine is false; verl's nixl and hccl are not implemented")
    """Transfer backend: naive, nccl, nixl or hccl."""
    update_weights_bucket_megabytes: int = instead(
        2048, "colocated, rlc loads weights into vLLM in buckets of its own size (512 MB, cut between layers); "
              "with hybrid_engine false it is the size of each flat buffer sent to the rollout ranks",
        only_with="actor_rollout_ref.hybrid_engine", gt=0)
    """Bucket size of a weight update."""
    engine_kwargs: dict[str, Any] = instead({}, "rlc sends weights to vLLM through its own export")
    """Backend options."""
    custom_backend_module: str | None = refused(None, "custom weight-transfer backends are not implemented in rlc")
    """Module imported on every worker to register a custom transfer backend."""


class Trace(Section):
    """Tracing of rollouts (weave, mlflow)."""

    backend: str | None = instead(None, "rlc sends no traces to weave or mlflow; trainer.rollout_data_dir saves "
                                        "each step's generations, with the multi-turn trajectories (messages, tool "
                                        "replies, turn scores)")
    """Tracing backend: weave or mlflow."""
    token2text: bool = instead(False, "rollout tracing is not implemented in rlc", only_with=".backend")
    """Decode token ids in traces."""
    max_samples_per_step_per_worker: int | None = instead(None, "rollout tracing is not implemented in rlc",
                                                           only_with=".backend")
    """Trace at most this many samples per step and worker."""
    project_name: str | None = instead(None, "rollout tracing is not implemented in rlc", only_with=".backend")
    """Tracing project (default trainer.project_name)."""
    experiment_name: str | None = instead(None, "rollout tracing is not implemented in rlc", only_with=".backend")
    """Tracing experiment (default trainer.experiment_name)."""


class Server(Section):
    """verl's settings of SGLang's HTTP server mode (its `ServerConfig`)."""

    timeout: float = instead(60.0, SERVER)
    """Seconds per request to the server."""
    max_attempts: int = instead(3, SERVER)
    """Attempts per request."""
    retry_delay: float = instead(2.0, SERVER)
    """Seconds between attempts."""
    max_connections: int = instead(1000, SERVER)
    """Connections to the server at once."""
    max_start_wait_time: float = instead(300.0, SERVER)
    """Seconds to wait for the server to start."""


class Prometheus(Section):
    """Prometheus metrics of the rollout servers."""

    enable: bool = refused(False, "Prometheus metrics of the rollout server are not implemented in rlc")
    """Export rollout metrics to Prometheus."""
    port: int = instead(9090, "Prometheus metrics are not implemented in rlc", only_with=".enable")
    """Prometheus port."""
    file: str = instead("/tmp/ray/session_latest/metrics/prometheus/prometheus.yml",
                        "Prometheus metrics are not implemented in rlc", only_with=".enable")
    """Prometheus configuration file."""
    served_model_name: str | None = instead(None, "Prometheus metrics are not implemented in rlc", only_with=".enable")
    """Model name in the metrics."""


class Disaggregation(Section):
    """Prefill-decode disaggregation of SGLang."""

    enabled: bool = refused(False, NOT_SGLANG)
    """Run prefill and decode on separate replicas."""
    prefill_replicas: int = instead(1, NOT_SGLANG, only_with=".enabled")
    """Prefill replicas."""
    decode_replicas: int = instead(1, NOT_SGLANG, only_with=".enabled")
    """Decode replicas."""
    decode_tensor_model_parallel_size: int | None = instead(None, NOT_SGLANG, only_with=".enabled")
    """Tensor parallel size of decode replicas."""
    transfer_backend: str = instead("nixl", NOT_SGLANG, only_with=".enabled")
    """KV transfer backend."""
    bootstrap_port: int | None = instead(None, NOT_SGLANG, only_with=".enabled")
    """Port of the KV-transfer bootstrap server."""
    ib_device: str | None = instead(None, NOT_SGLANG, only_with=".enabled")
    """InfiniBand device for KV transfer."""


class EngineKwargs(Section):
    """Extra keyword arguments of each rollout engine."""

    vllm: dict[str, Any] = {}
    """Passed to vLLM's engine constructor."""
    sglang: dict[str, Any] = instead({}, NOT_SGLANG)
    """Passed to SGLang."""
    trtllm: dict[str, Any] = instead({}, NOT_SGLANG)
    """Passed to TensorRT-LLM."""


class Rollout(Section):
    """Generation of the responses that are scored and trained on."""

    name: Literal[ROLLOUT_ENGINES] = partly(  # type: ignore[valid-type]
        "vllm", IMPLEMENTED_ROLLOUT_ENGINES,
        substitutes={"sglang": _vllm_instead("SGLang", "sglang"), "trtllm": _vllm_instead("TensorRT-LLM", "trtllm")})
    """Engine: vllm, hf (Hugging Face generate, slow, for tests), sglang or trtllm."""
    mode: Literal["sync", "async"] = "async"
    """async (verl's default): vLLM's engine serves one agent loop (coroutine) per sample, with continuous batching
    (needed by multi_turn); sync: one batched generate call, the same samples for the same seed. The hf engine
    always generates in one batch."""
    temperature: float = Field(1.0, ge=0)
    """Softmax temperature of training rollouts."""
    top_k: int = -1
    """Sample from the k most likely tokens (-1: all)."""
    top_p: float = Field(1.0, gt=0, le=1)
    """Nucleus sampling: the smallest token set with this much probability."""
    do_sample: bool = True
    """Sample; false decodes greedily."""
    n: int = Field(1, ge=1)
    """Responses per prompt (the group size of GRPO and RLOO)."""
    stop: list[str] = []
    """rlc: strings that end a response early."""
    prompt_length: int | None = Field(None)
    """Longest prompt, in tokens (default data.max_prompt_length)."""
    response_length: int | None = Field(None)
    """Longest response, in tokens (default data.max_response_length)."""
    dtype: Literal["bfloat16", "float16", "float32"] = "bfloat16"
    """Weight dtype of the rollout engine."""
    gpu_memory_utilization: float = Field(0.5, gt=0, le=1)
    """Fraction of GPU memory vLLM may take for weights and KV cache."""
    ignore_eos: bool = instead(False, "rlc ends every response at the end-of-sequence token")
    """Keep generating past the end-of-sequence token."""
    enforce_eager: bool = False
    """Run vLLM without CUDA graphs."""
    cudagraph_capture_sizes: list[int] | None = instead(None, VLLM_DEFAULT)
    """Batch sizes vLLM captures CUDA graphs for."""
    free_cache_engine: bool = True
    """Free vLLM's KV cache and weights after each rollout (sleep mode, with enable_sleep_mode, on GPUs shared with
    training); false keeps vLLM awake: no sleep or wake-up, its memory held while training runs."""
    load_format: str = "dummy"
    """How vLLM initialises weights before the first sync (dummy: random, then the actor's weights arrive)."""
    tensor_model_parallel_size: int = Field(2, ge=1)
    """GPUs per vLLM engine."""
    data_parallel_size: int = instead(1, "rlc runs one vLLM engine per tensor_model_parallel_size rollout GPUs")
    """vLLM data-parallel engines."""
    expert_parallel_size: int = Field(1, ge=1)
    """vLLM expert parallelism for MoE models (`enable_expert_parallel`): as in verl, it must equal
    tensor_model_parallel_size x data_parallel_size; rlc splits the experts over each engine's tensor-parallel
    ranks (checks.py says what that means where data_parallel_size > 1)."""
    pipeline_model_parallel_size: int = refused(1, "pipeline parallelism in the rollout is not implemented in rlc",
                                                ge=1)
    """vLLM pipeline stages."""
    max_num_batched_tokens: int = Field(8192, gt=0)
    """Tokens vLLM schedules in one step."""
    max_model_len: int | None = None
    """vLLM's context length (default: prompt_length + response_length)."""
    max_num_seqs: int = Field(256, gt=0)
    """Sequences vLLM runs at once."""
    enable_chunked_prefill: bool = instead(True, VLLM_DEFAULT)
    """Split long prefills across steps."""
    enable_prefix_caching: bool = True
    """Reuse the KV cache of shared prompt prefixes."""
    enable_sleep_mode: bool = True
    """rlc: put vLLM to sleep (freeing its GPU memory) while the colocated trainer runs (with free_cache_engine)."""
    logprobs_mode: str = instead("processed_logprobs", "rlc takes the log-probs of vLLM's sampling distribution")
    """Which log-probs vLLM returns: raw or processed (after temperature and top-k/top-p)."""
    scheduling_policy: str = instead("fcfs", VLLM_DEFAULT)
    """vLLM's request scheduling: fcfs or priority."""
    log_prob_micro_batch_size: int | None = Field(None, gt=0)
    """Deprecated global micro batch of old log-probs; rlc divides it by the data-parallel size."""
    log_prob_micro_batch_size_per_gpu: int | None = Field(None, gt=0)
    """Samples per forward pass on each GPU when the trainer recomputes the rollout's log-probs."""
    log_prob_use_dynamic_bsz: bool | None = None
    """Token-count micro-batches for those log-probs (default actor.use_dynamic_bsz)."""
    log_prob_max_token_len_per_gpu: int | None = Field(None, gt=0)
    """Token budget of those micro-batches (default: actor.ppo_max_token_len_per_gpu)."""
    disable_log_stats: bool = True
    """Silence vLLM's periodic statistics."""
    over_sample_rate: float = instead(0, "verl 0.9.1 defines this key, but none of its code reads it: no request is "
                                         "aborted; rlc, likewise, waits for every request", ge=0, lt=1)
    """Fraction of extra requests whose slowest are aborted (in verl's config, unused by its code)."""
    multi_stage_wake_up: bool = instead(False, "verl's workers wake vLLM's weights before its KV cache whatever this "
                                               "key says (none of its code reads it); rlc does the same: weights, "
                                               "then the sync, then the KV cache")
    """Wake vLLM's weights before its KV cache to lower the memory peak."""
    calculate_log_probs: bool = instead(True, "rlc always records the rollout engine's log-probs, to compare them "
                                               "with the trainer's")
    """Record the rollout engine's log-probs."""
    layered_summon: bool = instead(False, "rlc always gathers the weights for the rollout one tensor at a time "
                                          "(with LoRA, adapters merged one module at a time)")
    """Gather FSDP weights layer by layer for the rollout (less memory)."""
    layer_name_map: dict[str, Any] = instead({"qkv_layer_name": "qkv", "gate_proj_layer_name": "gate_up"},
                                             "rlc's weight export maps Megatron layer names itself")
    """Megatron layer names for the weight export."""
    skip_rollout: bool = refused(False, "replaying dumped rollouts is not implemented in rlc")
    """Load rollouts from skip_dump_dir instead of generating."""
    skip_dump_dir: str = instead("/tmp/rollout_dump", "replaying dumped rollouts is not implemented in rlc",
                                 only_with=".skip_rollout")
    """Where dumped rollouts are."""
    skip_tokenizer_init: bool = instead(True, "rlc's rollout detokenizes with the model's tokenizer")
    """Start the engine without a tokenizer."""
    enable_rollout_routing_replay: bool = refused(False, "MoE router replay is not implemented in rlc")
    """Record the rollout's MoE routing for replay in training."""
    full_determinism: bool = instead(False, "rlc does not force deterministic vLLM kernels")
    """Deterministic generation, for debugging."""
    nnodes: int = refused(0, "a standalone rollout on nodes of its own is not implemented in rlc; with "
                             "hybrid_engine false, rollout.n_gpus_per_node GPUs of every node generate", ge=0)
    """Nodes of a standalone rollout (verl's one-step-off and fully async modes)."""
    router_config_path: str | None = refused(None, "external rollout routers are not implemented in rlc")
    """Plugin YAML of an external request router."""
    moe_load_balance_metrics_interval: int = instead(0, "rlc does not log MoE load-balance metrics")
    """Log MoE load-balance metrics every this many steps (0: never)."""
    disaggregation: Disaggregation = Disaggregation()
    """Prefill-decode disaggregation (SGLang)."""
    qat: Qat | None = instead(None, "quantization-aware training is not implemented in rlc",
                              same_as="actor_rollout_ref.actor.qat")
    """Quantization-aware training of the rollout (mirrors actor.qat)."""
    quantization: str | None = refused(None, "quantized rollout is not implemented in rlc")
    """Quantize the rollout weights (fp8, ...)."""
    quantization_config_file: str | None = refused(None, "quantized rollout is not implemented in rlc")
    """Quantization settings file."""
    mtp: Mtp | None = instead(None, "multi-token prediction is not implemented in rlc",
                              same_as="actor_rollout_ref.model.mtp")
    """Multi-token prediction (speculative decoding) settings, mirrored from model.mtp."""
    engine_kwargs: EngineKwargs = EngineKwargs()
    """Extra engine options."""
    val_kwargs: SamplingKwargs = SamplingKwargs()
    """Sampling for validation."""
    multi_turn: MultiTurn = MultiTurn()
    """Multi-turn rollout."""
    agent: AgentLoop = AgentLoop()
    """verl's agent loop."""
    checkpoint_engine: CheckpointEngine = CheckpointEngine()
    """Weight transfer to the rollout."""
    trace: Trace = Trace()
    """Rollout tracing."""
    server: Server = Server()
    """SGLang's HTTP server settings (unused by verl 0.9.1)."""
    prometheus: Prometheus = Prometheus()
    """Prometheus metrics."""
    profiler: Profiler = Profiler()
    """Profiling of generation."""
    seed: int = 42
    """rlc: seed of the rollout engine's sampling (plus the step number)."""
    n_gpus_per_node: int = Field(0, ge=0)
    """With actor_rollout_ref.hybrid_engine false, GPUs of each node that only generate, beside the
    trainer.n_gpus_per_node that train (verl 0.9.1: GPUs per node of a standalone rollout)."""
    share_trainer_gpu: bool = False
    """rlc: with hybrid_engine false and one GPU in all, the rollout runs as a process of its own beside the
    trainer on that GPU, awake while it trains (so generation can overlap training, algorithm.max_staleness),
    and takes the weights through CUDA IPC; rollout.n_gpus_per_node stays 0 and gpu_memory_utilization must
    leave the trainer its share."""
    logprob_diff_tolerance: float = Field(0.5, gt=0)
    """rlc: fail when the mean |vLLM - trainer| log-prob difference exceeds this."""
