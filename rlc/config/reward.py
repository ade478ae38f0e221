"""Where rewards come from: rule functions by data source, a custom function, a remote server (seed 003), and a
reward model (`reward_model.enable`) scored on a worker group of its own.

A reward model's score replaces the other source's, as in verl; rlc's own `reward_model.model_weight` and
`rule_weight` mix the two instead (verl has no key for that).
"""

from typing import Any, Literal

from pydantic import Field

from rlc.config.base import PROFILING, NullableSection, Section, instead, partly, refused
from rlc.config.engine import ULYSSES

REWARD_MODEL_ONLY = ("rlc reads a reward model from the top-level reward_model section (reward_model.enable, "
                     "reward_model.model.path)")
REWARD_MANAGERS = ("naive", "batch", "dapo", "prime", "remote")
"""verl's registered reward managers; rlc's reward worker is verl's `naive` one."""
IMPLEMENTED_REWARD_MANAGERS = ("naive", "dapo")
RM = "reward_model.enable"
NAIVE = ("rlc has verl's naive manager (each sample scored on its own by its rule or custom function) and dapo "
         "(naive plus the overlong penalty of reward_kwargs.overlong_buffer_cfg)")
PRIME_INSTEAD = {"prime": ("naive", "the same scores, computed one sample at a time in rlc's reward worker (verl's "
                                    "prime manager spreads them over a process pool with a per-sample timeout)")}
DAPO_KWARGS = ("overlong_buffer_cfg", "max_resp_len")  # what verl's main_ppo hands the dapo manager
GENERATIVE = ("a generative reward model is served by `rlc reward-server` (its llm_judge verifier) and scored through "
              "reward_api; reward_model.rollout is not read")
REWARD_MODEL_HEADS = {"ForSequenceClassification": "sequence", "ForTokenClassification": "token"}
"""config.json architecture suffixes of a reward model, and the head each names (the runtime scores both)."""
RM_FIXED_BATCHES = "rlc scores the reward model in micro-batches of micro_batch_size_per_gpu samples"


class CustomRewardFunction(NullableSection):
    """A reward function of the user's: `fn(data_source, solution_str, ground_truth, extra_info)`."""

    path: str | None = None
    """Python file defining the function."""
    name: str | None = "compute_score"
    """Name of the function in that file."""
    reward_kwargs: dict[str, Any] = instead({}, "rlc calls the function with verl's four arguments only")
    """Extra keyword arguments for the function."""


class SandboxFusion(NullableSection):
    """verl's code-execution sandbox service: code-contest rows (data sources codecontests, apps, codeforces, taco)
    are scored by running their test cases there, when no custom_reward_function or reward_api replaces the
    built-in rules."""

    url: str | None = None
    """The service's full endpoint, as verl takes it: `http://host:8080/run_code`."""
    max_concurrent: int | None = Field(64, ge=1)
    """Requests to the service in flight at once, over the whole batch."""
    memory_limit_mb: int | None = Field(1024, ge=1)
    """Memory limit of each program run, sent to the service (`memory_limit_MB`)."""


SANDBOX_PLACES = (("reward_model", "sandbox_fusion"), ("reward", "sandbox_fusion"), ("sandbox_fusion",))
"""Where verl reads the sandbox: `reward_model.sandbox_fusion` (the release verl's example scripts were written
for), `reward.sandbox_fusion` (verl 0.9.1), and 0.9.1's legacy top-level `sandbox_fusion`, which it moves there.
The compiler copies the one that is set to the first, which the runtime reads."""


class OverlongBuffer(Section):
    """DAPO's overlong reward shaping: a penalty growing over the last `len` tokens before max_response_length."""

    enable: bool = False
    """Penalise responses that run into the buffer."""
    len: int = Field(0, ge=0)
    """Tokens of the buffer before max_response_length."""
    penalty_factor: float = Field(1.0, ge=0)
    """Penalty at the end of the buffer (it rises linearly from 0)."""
    log: bool = instead(False, "rlc always logs the penalty (reward/overlong_reward/mean)", only_with=".enable")
    """Log the penalty."""


class RewardModelModel(NullableSection):
    """The reward model to load: a sequence-classification checkpoint (or verl's token-classification kind)."""

    path: str | None = None
    """Local folder (or Hub id) of the model; its config.json must name a *ForSequenceClassification or
    *ForTokenClassification architecture."""
    input_tokenizer: str | None = instead(None, "rlc decodes the response with the policy's tokenizer "
                                                "(actor_rollout_ref.model) and renders the reward model's own chat "
                                                "template; null does the same (verl would feed the policy's tokens)",
                                          same_as="actor_rollout_ref.model.path", only_with=RM)
    """verl: the tokenizer that decodes the response before the reward model's chat template is applied (verl's
    default: the policy's; null: feed the policy's tokens unchanged)."""
    external_lib: str | None = refused(None, "importing external model code is not implemented in rlc; use "
                                             "trust_remote_code")
    """Module to import for the model's code."""
    trust_remote_code: bool = False
    """Allow the checkpoint's own modelling code."""
    override_config: dict[str, Any] = {}
    """Values that replace the model's config.json entries."""
    use_shm: bool = instead(False, "rlc loads the reward model from its path", only_with=RM)
    """Copy the model to shared memory first."""
    use_remove_padding: bool = instead(False, "rlc scores padded micro-batches", only_with=RM)
    """Score packed sequences without padding."""
    use_fused_kernels: bool = instead(False, "rlc does not use fused kernels", only_with=RM)
    """Fused kernels."""
    fsdp_config: dict[str, Any] = instead({}, "rlc shards the reward model with FSDP2 over all of its ranks "
                                              "(reward_model.n_gpus_per_node x nnodes) with its own defaults",
                                          only_with=RM)
    """FSDP options of the reward model."""


class RewardModel(NullableSection):
    """verl's reward section: a model-based reward, and how rule rewards are computed."""

    enable: bool | None = False
    """Score responses with a reward model (reward_model.model.path) on a worker group of its own."""
    model_weight: float = 1.0
    """rlc's key (verl has none): the reward model's score is multiplied by this."""
    rule_weight: float = 0.0
    """rlc's key (verl has none): weight of the other source's score (rule functions, custom_reward_function or
    reward_api) added to the weighted model score; 0, the default, is verl's behaviour: the model's score alone.
    Unlike verl, a custom_reward_function does not switch the reward model off."""
    reward_manager: str | None = partly("naive", IMPLEMENTED_REWARD_MANAGERS, NAIVE, substitutes=PRIME_INSTEAD)
    """How samples are scored: naive (one at a time), batch, dapo (overlong penalty), prime, ..."""
    reward_kwargs: dict[str, Any] = {}
    """Extra arguments of the reward manager: the dapo manager's `overlong_buffer_cfg` (enable, len,
    penalty_factor, log) and `max_resp_len`; rlc warns about any other."""
    use_reward_loop: bool = instead(True, "rlc computes rewards in its own reward worker")
    """verl: compute rewards in the reward loop workers."""
    num_workers: int | None = instead(1, "rlc's reward worker is one process; reward_api.max_workers sets the "
                                         "concurrency of remote scoring")
    """verl's reward-loop workers."""
    launch_reward_fn_async: bool = instead(False, "rlc computes rewards after generation, in the step")
    """Compute rule rewards while the critic and actor update."""
    reward_loop_source: str | None = instead("register", "rlc scores a reward model with its own worker group",
                                             only_with=RM)
    """Where the reward loop class comes from: register or importlib."""
    reward_loop_module_path: str | None = refused(None, "custom reward loops are not implemented in rlc")
    """File of a custom reward loop."""
    reward_loop_class_name: str | None = refused(None, "custom reward loops are not implemented in rlc")
    """Class of that reward loop."""
    sandbox_fusion: SandboxFusion = SandboxFusion()
    """Code-execution sandbox (SandboxFusion) for code-contest rows; the place the runtime reads."""
    overlong_buffer: OverlongBuffer = OverlongBuffer()
    """DAPO's overlong reward shaping (the recipe's place for it)."""
    enable_resource_pool: bool | None = False
    """Give the reward model ranks of its own: n_gpus_per_node x nnodes, sharded with FSDP2 (rlc always places
    the reward model on ranks of its own; off, it gets one)."""
    n_gpus_per_node: int | None = Field(8, ge=0)
    """Ranks per node of the reward model (with enable_resource_pool; 0 counts as 1)."""
    nnodes: int | None = Field(0, ge=0)
    """Nodes of the reward model (with enable_resource_pool; 0 counts as 1)."""
    strategy: str = partly("fsdp", ("fsdp", "fsdp2"), "rlc runs the reward model on FSDP2")
    """Engine of the reward model."""
    model: RewardModelModel = RewardModelModel()
    """The reward model: path, trust_remote_code, override_config, ..."""
    micro_batch_size: int | None = instead(None, "rlc reads micro_batch_size_per_gpu", only_with=RM)
    """Deprecated global micro batch of the reward model."""
    micro_batch_size_per_gpu: int | None = Field(None, ge=1)
    """Samples per forward pass of the reward model on each rank (null: all of a rank's samples at once)."""
    max_length: int | None = Field(None, ge=1)
    """Longest input of the reward model; longer ones are cut on the right (null: no limit)."""
    use_dynamic_bsz: bool | None = instead(None, RM_FIXED_BATCHES, only_with=RM)
    """Token-count micro-batches for the reward model."""
    forward_max_token_len_per_gpu: int | None = instead(None, RM_FIXED_BATCHES, only_with=RM)
    """Token budget of those micro-batches."""
    ulysses_sequence_parallel_size: int = refused(1, ULYSSES, ge=1)
    """Ranks that split each sequence."""
    profiler: dict[str, Any] = instead({}, PROFILING, only_with=RM)
    """Profiling of the reward model."""
    rollout: dict[str, Any] = instead({}, GENERATIVE, only_with=RM)
    """Generation settings of a generative reward model."""
    megatron: dict[str, Any] = instead({}, "rlc runs the reward model on FSDP2", only_with=RM)
    """Megatron options of the reward model."""
    nccl_timeout: int = 600
    """Seconds the reward model's ranks wait in a collective."""
    load_weight: bool = instead(True, "rlc runs the reward model on FSDP2 and always loads its weights",
                                only_with=RM)
    """Megatron: load the reward model's weights."""


class RewardManagerModule(Section):
    """A reward manager class of the user's."""

    path: str | None = refused(None, "custom reward managers are not implemented in rlc")
    """File defining it."""
    name: str = instead("custom_reward_manager", "custom reward managers are not implemented in rlc",
                                    only_with=".path")
    """Its class name."""


class RewardManager(Section):
    """verl's top-level `reward_manager`: which manager scores the samples."""

    source: Literal["register", "importlib"] = partly("register", ("register",), "custom reward managers are not "
                                                                                 "implemented in rlc")
    """register: one of verl's managers by name; importlib: a class from module.path."""
    name: str = partly("naive", IMPLEMENTED_REWARD_MANAGERS, NAIVE, substitutes=PRIME_INSTEAD)
    """Registered manager (mirrors reward_model.reward_manager)."""
    module: RewardManagerModule = RewardManagerModule()
    """A manager class of the user's."""


class RewardModelV1(Section):
    """verl 0.9.1's `reward.reward_model`: a model-based reward served by rollout engines."""

    enable: bool = refused(False, "rlc reads a reward model from the top-level reward_model section: set "
                                  "reward_model.enable and reward_model.model.path")
    """Score responses with a reward model."""
    enable_resource_pool: bool = instead(False, REWARD_MODEL_ONLY, only_with=".enable")
    """Give the reward model GPUs of its own."""
    n_gpus_per_node: int = instead(8, REWARD_MODEL_ONLY, only_with=".enable")
    """GPUs per node of that pool."""
    nnodes: int = instead(0, REWARD_MODEL_ONLY, only_with=".enable")
    """Nodes of that pool."""
    model_path: str | None = instead(None, REWARD_MODEL_ONLY, only_with=".enable")
    """The reward model."""
    rollout: dict[str, Any] | None = instead(None, REWARD_MODEL_ONLY, only_with=".enable")
    """Inference settings of the reward model."""


class Reward(Section):
    """verl 0.9.1's `reward` section (the older top-level sections still work)."""

    num_workers: int = instead(8, "rlc's reward worker is one process; reward_api.max_workers sets the concurrency "
                                  "of remote scoring")
    """Reward-loop workers."""
    custom_reward_function: CustomRewardFunction = CustomRewardFunction()
    """A reward function of the user's (copied to the top-level custom_reward_function when that is unset)."""
    reward_manager: RewardManager = RewardManager()
    """Which manager scores the samples."""
    reward_model: RewardModelV1 = RewardModelV1()
    """A model-based reward."""
    sandbox_fusion: SandboxFusion = SandboxFusion()
    """Code-execution sandbox (verl 0.9.1's place; copied to reward_model.sandbox_fusion)."""


class RewardAPI(Section):
    """rlc: scores from an rl_verifier-compatible HTTP server (`rlc reward-server`)."""

    enable: bool = False
    """Score every sample through the server."""
    api_url: str | None = None
    """Base URL of the server."""
    max_workers: int = Field(20, ge=1, le=1024)
    """Requests in flight at once."""
    timeout: float = Field(30, gt=0)
    """Seconds to wait for one answer."""
    max_retries: int = Field(3, ge=0)
    """Retries of a failed request."""
    on_failure: Literal["error", "zero"] = "error"
    """A sample that still fails after retries: fail the step, or score it 0 and count it."""
    verification_info_column: str = "verification_info"
    """Data column holding what the verifier needs."""
    save_dir: str | None = None
    """Directory to save scored samples in."""
    save_freq: int = 1
    """Save every this many steps."""


def overlong_shaping(manager: str | None, kwargs: dict[str, Any], recipe: OverlongBuffer,
                     max_response_length: int) -> tuple[OverlongBuffer, int]:
    """DAPO's overlong shaping and the response length it counts back from: the DAPO recipe's
    `reward_model.overlong_buffer`, or, as verl's main_ppo hands them to the dapo reward manager,
    `reward_kwargs.overlong_buffer_cfg` and `max_resp_len`."""
    given = kwargs.get("overlong_buffer_cfg") if manager == "dapo" else None
    if recipe.enable or not given:
        return recipe, max_response_length
    return OverlongBuffer.model_validate(given), int(kwargs.get("max_resp_len") or max_response_length)
