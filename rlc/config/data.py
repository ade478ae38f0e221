"""`data`: where prompts come from and how long prompts and responses may be.

Files are local paths (parquet, json, jsonl), lists of them, or Hugging Face dataset ids (seed 003). A Hub id is
pinned by `rlc resolve`; `revision` chooses its branch, tag or commit.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from rlc.config.base import Section, unimplemented


class CustomClass(Section):
    path: str | None = None
    name: str | None = None


class Data(Section):
    tokenizer: str | None = None
    use_shm: bool = False
    train_files: str | list[str] = Field(..., description="Paths or Hugging Face dataset ids")
    val_files: str | list[str] | None = None
    revision: str | None = Field(None, description="Branch, tag or commit for Hub dataset ids")
    revisions: dict[str, str] = Field({}, description="Set by resolve: Hub dataset id -> pinned commit")
    train_split: str = "train"
    val_split: str = "test"
    train_max_samples: int = -1
    val_max_samples: int = -1
    prompt_key: str = "prompt"
    reward_fn_key: str = "data_source"
    max_prompt_length: int = Field(512, gt=0)
    max_response_length: int = Field(512, gt=0)
    train_batch_size: int = Field(1024, gt=0)
    gen_batch_size: int | None = Field(None, gt=0)
    val_batch_size: int | None = Field(None, gt=0, description="Deprecated in verl: validation uses one batch")
    return_raw_input_ids: bool = False
    return_raw_chat: bool = True
    return_full_prompt: bool = False
    shuffle: bool = True
    seed: int | None = None
    dataloader_num_workers: int = Field(8, ge=0)
    validation_shuffle: bool = False
    filter_overlong_prompts: bool = False
    filter_overlong_prompts_workers: int = 1
    truncation: Literal["error", "left", "right", "middle"] = "error"
    trust_remote_code: bool = False
    image_key: str = unimplemented("images", "multimodal data is not implemented")
    custom_cls: CustomClass = CustomClass()
    apply_chat_template_kwargs: dict[str, Any] = {}
