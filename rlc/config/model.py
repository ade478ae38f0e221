"""`actor_rollout_ref.model` and the model blocks of critic and ref: what to load, from where, at which revision.

`revision` is seed 000's addition: a branch, tag or commit of a Hub repo, passed to every `from_pretrained`.
`rlc resolve` pins it to a full commit sha and keeps what the user wrote in `revision_requested`.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from rlc.config.base import Section, unimplemented


class ModelConfig(Section):
    path: str = Field(..., description="Local directory or Hugging Face Hub repo id")
    revision: str | None = Field(None, description="Hub branch, tag or commit; pinned to a commit by resolve")
    revision_requested: str | None = Field(None, description="Set by resolve: the revision as the user wrote it")
    hf_config_path: str | None = None
    tokenizer_path: str | None = None
    tokenizer_revision: str | None = None
    use_shm: bool = False
    trust_remote_code: bool = False
    custom_chat_template: str | None = None
    external_lib: str | None = None
    override_config: dict[str, Any] = {}
    enable_gradient_checkpointing: bool = True
    enable_activation_offload: bool = unimplemented(False)
    use_remove_padding: bool = True
    lora_rank: int = unimplemented(0, "LoRA training is not implemented", error=True)
    lora_alpha: int = 16
    target_modules: str | list[str] = "all-linear"
    exclude_modules: str | list[str] | None = None
    lora_adapter_path: str | None = None
    use_liger: bool = unimplemented(False)
    use_fused_kernels: bool = unimplemented(False)


class RefModel(Section):
    """A reference or reward model that lives elsewhere than the actor's."""

    path: str
    revision: str | None = None
    revision_requested: str | None = None
