"""`actor_rollout_ref.model` and the model blocks of critic and ref: what to load, from where, at which revision.

`revision` is seed 000's addition: a branch, tag or commit of a Hub repo, passed to every `from_pretrained`.
`rlc resolve` pins it to a full commit sha and keeps what the user wrote in `revision_requested`.
"""

from typing import Any

from pydantic import Field

from rlc.config.base import Section, instead, refused

MEGATRON_LORA = "LoRA is implemented on the fsdp backend only (actor_rollout_ref.model.lora_rank)"
MEGATRON_LORA_ONLY = "Megatron's LoRA block is not implemented in rlc; LoRA runs on the fsdp backend " \
                     "(actor_rollout_ref.model.lora_rank, lora_alpha, target_modules)"
MTP_ONLY = "multi-token prediction is not implemented in rlc"


class FusedKernelOptions(Section):
    """Options of verl's fused log-prob kernels."""

    impl_backend: str = instead("torch", "rlc does not use fused kernels")
    """Backend of the fused kernels: torch or triton."""


class TiledMLP(Section):
    """Compute the MLP in tiles to lower peak memory."""

    enabled: bool = instead(False, "rlc computes the MLP untiled")
    """Tile the MLP's forward and backward."""
    num_shards: int = instead(4, "rlc computes the MLP untiled", only_with=".enabled")
    """Tiles per MLP."""


class Mtp(Section):
    """Multi-token prediction heads (training them, or using them for speculative decoding)."""

    enable: bool = refused(False, MTP_ONLY)
    """Load the model's MTP layers."""
    enable_train: bool = refused(False, MTP_ONLY)
    """Train the MTP layers."""
    enable_rollout: bool = refused(False, MTP_ONLY)
    """Use them for speculative decoding in the rollout."""
    detach_encoder: bool = instead(False, MTP_ONLY, only_with=".enable")
    """Stop gradients from the MTP loss into the main model."""
    mtp_loss_scaling_factor: float = instead(0.1, MTP_ONLY, only_with=".enable")
    """Weight of the MTP loss."""
    speculative_algorithm: str = instead("EAGLE", MTP_ONLY, only_with=".enable")
    """Speculative decoding algorithm."""
    speculative_num_steps: int = instead(2, MTP_ONLY, only_with=".enable")
    """Draft steps per speculation."""
    speculative_eagle_topk: int = instead(2, MTP_ONLY, only_with=".enable")
    """EAGLE's top-k branching."""
    speculative_num_draft_tokens: int = instead(4, MTP_ONLY, only_with=".enable")
    """Draft tokens per speculation."""
    method: str = instead("mtp", MTP_ONLY, only_with=".enable")
    """Speculation method."""
    num_speculative_tokens: int = instead(1, MTP_ONLY, only_with=".enable")
    """Tokens proposed per step."""


class MegatronLora(Section):
    """verl's Megatron LoRA block (`model.lora`)."""

    type: str = instead("lora", MEGATRON_LORA_ONLY, only_with=".rank")
    """Adapter type: lora, dora, ..."""
    merge: bool = instead(False, MEGATRON_LORA_ONLY, only_with=".rank")
    """Merge the adapter into the weights for the rollout."""
    rank: int = refused(0, MEGATRON_LORA, ge=0)
    """LoRA rank; 0 trains all weights."""
    alpha: int = instead(32, MEGATRON_LORA_ONLY, only_with=".rank")
    """LoRA scaling numerator."""
    dropout: float = instead(0.0, MEGATRON_LORA_ONLY, only_with=".rank")
    """Dropout on the adapter's input."""
    target_modules: list[str] = instead(["linear_qkv", "linear_proj", "linear_fc1", "linear_fc2"], MEGATRON_LORA_ONLY,
                                        only_with=".rank")
    """Megatron modules that get adapters."""
    exclude_modules: list[str] = instead([], MEGATRON_LORA_ONLY, only_with=".rank")
    """Modules left without adapters."""
    dropout_position: str = instead("pre", MEGATRON_LORA_ONLY, only_with=".rank")
    """Where the dropout sits."""
    lora_A_init_method: str = instead("xavier", MEGATRON_LORA_ONLY, only_with=".rank")  # noqa: N815 (verl's key)
    """Initialisation of A."""
    lora_B_init_method: str = instead("zero", MEGATRON_LORA_ONLY, only_with=".rank")  # noqa: N815 (verl's key)
    """Initialisation of B."""
    a2a_experimental: bool = instead(False, MEGATRON_LORA_ONLY, only_with=".rank")
    """Experimental all-to-all for expert adapters."""
    dtype: str | None = instead(None, MEGATRON_LORA_ONLY, only_with=".rank")
    """Adapter dtype."""
    adapter_path: str | None = refused(None, MEGATRON_LORA)
    """Adapter to start from."""
    freeze_vision_model: bool = instead(True, MEGATRON_LORA_ONLY, only_with=".rank")
    """Keep the vision encoder frozen."""
    freeze_vision_projection: bool = instead(True, MEGATRON_LORA_ONLY, only_with=".rank")
    """Keep the vision projection frozen."""
    freeze_language_model: bool = instead(True, MEGATRON_LORA_ONLY, only_with=".rank")
    """Keep the language model's base weights frozen."""


class ModelConfig(Section):
    """The policy model (and, by default, the critic's and the reference's)."""

    path: str = Field(...)
    """Local directory or Hugging Face Hub repo id."""
    revision: str | None = None
    """rlc: Hub branch, tag or commit; pinned to a commit by resolve."""
    revision_requested: str | None = None
    """rlc: set by resolve, the revision as the user wrote it."""
    hf_config_path: str | None = None
    """Read config.json from here instead of path."""
    tokenizer_path: str | None = None
    """Load the tokenizer from here instead of path."""
    tokenizer_revision: str | None = None
    """rlc: Hub revision of tokenizer_path."""
    use_shm: bool = instead(False, "rlc loads the model from its path (no copy to shared memory)")
    """Copy the model to /dev/shm before loading."""
    trust_remote_code: bool = False
    """Allow the model repo's own Python code (needed by some architectures)."""
    custom_chat_template: str | None = None
    """Jinja chat template replacing the tokenizer's."""
    external_lib: str | None = refused(None, "importing external model code is not implemented in rlc; use "
                                             "trust_remote_code")
    """Python module to import so that it registers a custom model."""
    override_config: dict[str, Any] = {}
    """Fields of the model's config.json to override (attn_implementation picks the attention kernel)."""
    enable_gradient_checkpointing: bool = True
    """Recompute activations in backward to save memory."""
    enable_activation_offload: bool = instead(False, "rlc keeps activations on the GPU; use "
                                                     "enable_gradient_checkpointing to save memory")
    """Move activations to CPU memory between forward and backward."""
    use_remove_padding: bool = True
    """Pack sequences without padding, on CUDA under flash attention where installed, else flex_attention
    (override_config.attn_implementation picks another kernel; without a varlen one, micro-batches are padded)."""
    lora_rank: int = Field(0, ge=0)
    """LoRA rank; 0 trains all weights, more trains peft adapters on a frozen base (fsdp backend)."""
    lora_alpha: int = 16
    """LoRA scaling numerator (the adapters are scaled by lora_alpha / lora_rank)."""
    target_modules: str | list[str] = "all-linear"
    """Modules that get LoRA adapters: names, a regex, or all-linear (every Linear but the output layer)."""
    exclude_modules: str | list[str] | None = None
    """Modules left without adapters."""
    lora_adapter_path: str | None = None
    """A trained PEFT adapter (local folder) to start from instead of fresh adapters."""
    use_liger: bool = instead(False, "rlc does not patch the model with Liger kernels")
    """Patch the model with Liger kernels."""
    use_fused_kernels: bool = instead(False, "rlc does not use fused log-prob kernels")
    """Fused kernels for log-probs and entropy."""
    fused_kernel_options: FusedKernelOptions = FusedKernelOptions()
    """Options of the fused kernels."""
    tiled_mlp: TiledMLP = TiledMLP()
    """Tiled MLP computation."""
    mtp: Mtp = Mtp()
    """Multi-token prediction."""
    lora: MegatronLora = MegatronLora()
    """Megatron LoRA options."""
