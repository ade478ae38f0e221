"""`data`: where prompts come from and how long prompts and responses may be.

Files are local paths (parquet, json, jsonl), lists of them, or Hugging Face dataset ids (seed 003). A Hub id is
pinned by `rlc resolve`; `revision` chooses its branch, tag or commit.
"""

from typing import Any, Literal

from pydantic import Field

from rlc.config.base import Section, instead, refused

VISION = "multimodal data is not implemented in rlc; only the text prompt is read"
OWN_LOADER = "rlc's data loader keeps the prompt's token ids and chat messages itself"


class CustomClass(Section):
    """A dataset class of the user's."""

    path: str | None = refused(None, "custom dataset classes are not implemented in rlc")
    """File defining the class."""
    name: str | None = refused(None, "custom dataset classes are not implemented in rlc")
    """Name of the class."""


# verl's own example sampler (a test module of verl's repository, which imports verl) -> rlc's implementation.
VERL_SAMPLERS = {("pkg://tests.utils.dataset.test_create_rl_sampler_on_cpu", "RandomCurriculumSampler"):
                 ("pkg://rlc_runtime.samplers", "RandomCurriculumSampler")}


class Sampler(Section):
    """A sampler class of the user's (curriculum learning), built as verl builds it:
    `cls(data_source=dataset, data_config=data)`, an iterable of row indices; a curriculum sampler's
    `update(batch=...)` is called after every step (see rlc_runtime/samplers.py for what it receives)."""

    class_path: str | None = None
    """Module of the sampler: `pkg://package.module` (imported by name) or a file (`file://x.py`, `x.py`)."""
    class_name: str | None = None
    """Name of the sampler class in that module."""


class DataGen(Section):
    """A dynamic data generator of the user's."""

    path: str | None = refused(None, "dynamic data generation is not implemented in rlc")
    """File defining the generator."""
    name: str | None = refused(None, "dynamic data generation is not implemented in rlc")
    """Name of the generator class."""


class Data(Section):
    """Training and validation prompts."""

    tokenizer: str | None = instead(None, "rlc tokenizes prompts with the policy's tokenizer (model.tokenizer_path "
                                          "or model.path)")
    """Tokenizer for the prompts (default: the model's)."""
    use_shm: bool = instead(False, "rlc reads data files from their path (no copy to shared memory)")
    """Copy data files to /dev/shm first."""
    train_files: str | list[str] = Field(...)
    """Training prompts: parquet, json or jsonl paths, or Hugging Face dataset ids."""
    val_files: str | list[str] | None = None
    """Validation prompts, in the same forms."""
    revision: str | None = None
    """rlc: branch, tag or commit for Hub dataset ids."""
    revisions: dict[str, str] = {}
    """rlc: set by resolve, Hub dataset id -> pinned commit."""
    train_split: str = "train"
    """rlc: split of a Hub training dataset."""
    val_split: str = "test"
    """rlc: split of a Hub validation dataset."""
    train_max_samples: int = -1
    """Use at most this many training prompts (-1: all)."""
    val_max_samples: int = -1
    """Use at most this many validation prompts (-1: all)."""
    prompt_key: str = "prompt"
    """Column holding the prompt (chat messages or a string)."""
    reward_fn_key: str = "data_source"
    """Column choosing the reward function."""
    max_prompt_length: int = Field(512, gt=0)
    """Longest prompt in tokens; see truncation."""
    max_response_length: int = Field(512, gt=0)
    """Longest response in tokens."""
    train_batch_size: int = Field(1024, gt=0)
    """Prompts per training step."""
    gen_batch_size: int | None = instead(None, "used by dynamic sampling (algorithm.filter_groups), which rlc "
                                               "does not implement yet; rlc generates train_batch_size prompts", gt=0)
    """Prompts generated per round of dynamic sampling."""
    val_batch_size: int | None = instead(None, "rlc validates the whole validation set in one batch, as verl "
                                               "does", gt=0)
    """Deprecated in verl: validation uses one batch."""
    tool_config_path: str | None = instead(None, "tools need multi-turn rollout, which is not implemented in rlc yet",
                                           same_as="actor_rollout_ref.rollout.multi_turn.tool_config_path")
    """Mirror of rollout.multi_turn.tool_config_path."""
    function_tool_path: str | None = instead(
        None, "tools need multi-turn rollout, which is not implemented in rlc yet",
        same_as="actor_rollout_ref.rollout.multi_turn.function_tool_path")
    """Mirror of rollout.multi_turn.function_tool_path."""
    return_raw_input_ids: bool = instead(False, OWN_LOADER)
    """Also return the prompt ids tokenized without chat template."""
    return_raw_chat: bool = instead(True, OWN_LOADER)
    """Also return the prompt's chat messages."""
    return_full_prompt: bool = instead(False, OWN_LOADER)
    """Also return the templated prompt text."""
    shuffle: bool = True
    """Shuffle the training prompts each epoch."""
    seed: int | None = None
    """Seed of that shuffle (default: trainer.seed)."""
    dataloader_num_workers: int = instead(8, "rlc reads the data in the trainer process", ge=0)
    """Worker processes of the data loader."""
    validation_shuffle: bool = instead(False, "rlc keeps the validation prompts in file order")
    """Shuffle the validation prompts."""
    filter_overlong_prompts: bool = False
    """Drop prompts longer than max_prompt_length instead of failing."""
    filter_overlong_prompts_workers: int = instead(1, "rlc filters in one process")
    """Processes that filter."""
    truncation: Literal["error", "left", "right", "middle"] = "error"
    """What to do with a prompt that is still too long: fail, or cut its left, right or middle."""
    trust_remote_code: bool = instead(False, "rlc loads the tokenizer with model.trust_remote_code")
    """Allow the tokenizer repo's own Python code."""
    image_key: str = instead("images", VISION)
    """Column holding images."""
    video_key: str = instead("videos", VISION)
    """Column holding videos."""
    audio_key: str = instead("audios", VISION)
    """Column holding audio."""
    mm_processor_kwargs: dict[str, Any] = instead({}, VISION)
    """Extra arguments of the multimodal processor."""
    image_patch_size: int = instead(14, VISION)
    """Vision patch size."""
    return_multi_modal_inputs: bool = instead(True, VISION)
    """Return processed multimodal inputs."""
    custom_cls: CustomClass = CustomClass()
    """A dataset class of the user's."""
    sampler: Sampler = Sampler()
    """A sampler class of the user's."""
    datagen: DataGen = DataGen()
    """A data generator of the user's."""
    apply_chat_template_kwargs: dict[str, Any] = {}
    """Extra arguments of the tokenizer's apply_chat_template (enable_thinking, ...)."""
