"""Prompts from local files or Hugging Face datasets, tokenized with the chat template, and a resumable sampler.

Rows come through the `datasets` library whatever their source (parquet, JSON/JSONL, a directory, a Hub id at
its pinned revision), so that one code path reads them all and the Hub path is the library's own (seed 003).
Two row formats are understood: verl's (`prompt` messages or text under `prompt_key`, `reward_model.ground_truth`,
`data_source`) and seed 003's (`messages` + a `verification_info` JSON string for the remote reward API).
Prompts are tokenized once, up front: a bad row or an overlong prompt fails before any worker starts.

The sampler's order is a pure function of (seed, epoch) and its position is a pair of integers saved in every
checkpoint, so a resumed run draws exactly the batches an uninterrupted run would have. It uses Python's
`random` (whose shuffle is stable across versions and platforms) and keeps this module free of torch.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

FORMATS = {".parquet": "parquet", ".json": "json", ".jsonl": "json", ".csv": "csv", ".arrow": "arrow"}
UNKNOWN_SOURCE = "unknown"


class DataError(ValueError):
    """Data the run cannot use; the message names the file or row and what to change."""


# loading rows ------------------------------------------------------------------------------------------------------
def load_rows(files: str | list[str], split: str = "train", revision: str | None = None, *,
              revisions: Mapping[str, str] | None = None) -> Any:
    """A `datasets.Dataset` of the rows of `files`: local files (by extension), directories, or Hub ids.

    `split` picks the split of a directory or Hub dataset (a single file is all one split); `revision` (or, per
    id, `revisions`, which `rlc resolve` fills with pinned commits) is the Hub revision to load.
    """
    import datasets

    names = [files] if isinstance(files, str) else list(files)
    if not names:
        raise DataError("data: no files given")
    datasets.disable_progress_bars()
    parts = [_load_one(name, split, (revisions or {}).get(name, revision)) for name in names]
    try:
        rows = parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)
    except ValueError as err:
        raise DataError(f"data: {', '.join(names)} cannot be combined into one dataset: {err}") from None
    if len(rows) == 0:
        raise DataError(f"data: {', '.join(names)} holds no rows")
    return rows


def load_split(data: Any, val: bool = False) -> Any:
    """`load_rows` for the `data` config section: its train or val files, split, revisions and sample limit."""
    files = data.val_files if val else data.train_files
    rows = load_rows(files, data.val_split if val else data.train_split, data.revision, revisions=data.revisions)
    limit = data.val_max_samples if val else data.train_max_samples
    return rows.select(range(min(limit, len(rows)))) if limit and limit > 0 else rows


def looks_like_hub_id(name: str) -> bool:
    """`org/name` without a data-file extension (the rule `rlc resolve` pins by)."""
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and Path(name).suffix not in FORMATS and not Path(name).exists()


def _load_one(name: str, split: str, revision: str | None) -> Any:
    import datasets

    path = Path(name).expanduser()
    try:
        if path.is_dir():
            if (path / "dataset_dict.json").exists() or (path / "state.json").exists():
                saved = datasets.load_from_disk(str(path))  # written by `save_to_disk`
                return saved[split] if isinstance(saved, datasets.DatasetDict) else saved
            return datasets.load_dataset(str(path), split=split)  # a data folder, laid out as on the Hub
        if path.suffix in FORMATS and path.is_file():
            return datasets.load_dataset(FORMATS[path.suffix], data_files=str(path), split="train")
        if looks_like_hub_id(name):
            return datasets.load_dataset(name, revision=revision, split=split)
    except Exception as err:  # the datasets library raises many types; one message names the data and the cause
        where = f"Hugging Face dataset {name!r} (split {split}, revision {revision})" if looks_like_hub_id(name) \
            else str(path)
        raise DataError(f"data: cannot load {where}: {type(err).__name__}: {err}") from None
    if path.suffix and path.suffix not in FORMATS:
        raise DataError(f"data: {path}: unknown file type {path.suffix!r}; use one of {', '.join(FORMATS)}")
    raise DataError(f"data: {path} does not exist (and is not a Hugging Face dataset id `org/name`)")


# rows -> tokenized prompts ----------------------------------------------------------------------------------------
class PromptOptions(Protocol):
    """What `PromptDataset` reads from its options: the fields of the `data` config section of the same names."""

    prompt_key: str
    reward_fn_key: str
    max_prompt_length: int
    filter_overlong_prompts: bool
    truncation: str
    apply_chat_template_kwargs: dict[str, Any]


class PromptDataset:
    """Rows -> tokenized prompts with what the reward needs; overlong prompts filtered or truncated as verl does.

    Each item: `index` (row position), `input_ids`, `prompt_text`, `raw_prompt` (the chat messages),
    `data_source`, `ground_truth` (verl's, or else the verification info), `verification_info`, `extra_info`.
    """

    def __init__(self, rows: Any, tokenizer: Any, options: PromptOptions,
                 verification_info_column: str = "verification_info") -> None:
        self.options, self.info_column = options, verification_info_column
        key = options.prompt_key
        columns = list(getattr(rows, "column_names", None) or (rows[0].keys() if len(rows) else []))
        if key not in columns and "messages" not in columns:
            raise DataError(f"data: the rows have no `{key}` (data.prompt_key) or `messages` column; "
                            f"their columns: {', '.join(columns)}")
        rows = list(rows)
        messages = [self._messages(i, row) for i, row in enumerate(rows)]
        texts = [_chat_text(tokenizer, m, options.apply_chat_template_kwargs) for m in messages]
        ids = tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
        self.items = []
        for index, (row, chat, text, one) in enumerate(zip(rows, messages, texts, ids, strict=True)):
            if (fitted := self._fit(one, index)) is not None:
                self.items.append(self._item(index, row, chat, text, fitted))
        if not self.items:
            raise DataError(f"data: every prompt is longer than max_prompt_length {options.max_prompt_length}")

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.items[index]

    def _messages(self, index: int, row: dict[str, Any]) -> list[dict[str, Any]]:
        prompt = row.get(self.options.prompt_key)
        if prompt is None:
            prompt = row.get("messages")
        if isinstance(prompt, str):
            return [{"role": "user", "content": prompt}]
        if not prompt or not all(isinstance(m, dict) and "role" in m and "content" in m for m in prompt):
            raise DataError(f"data: row {index}: the prompt must be text or a list of {{role, content}} messages, "
                            f"not {prompt!r:.80}")
        return list(prompt)

    def _item(self, index: int, row: dict[str, Any], messages: list[dict[str, Any]], text: str,
              ids: list[int]) -> dict[str, Any]:
        info = row.get(self.info_column)
        reward_model = row.get("reward_model") or {}
        truth = reward_model.get("ground_truth") if isinstance(reward_model, dict) else None
        return {"index": index, "input_ids": ids, "prompt_text": text, "raw_prompt": messages,
                "data_source": row.get(self.options.reward_fn_key) or UNKNOWN_SOURCE,
                "ground_truth": truth if truth is not None else info, "verification_info": info,
                "extra_info": row.get("extra_info")}

    def _fit(self, ids: list[int], index: int) -> list[int] | None:
        limit, options = self.options.max_prompt_length, self.options
        if len(ids) <= limit:
            return ids
        if options.filter_overlong_prompts:
            return None
        if options.truncation == "left":
            return ids[-limit:]
        if options.truncation == "right":
            return ids[:limit]
        if options.truncation == "middle":
            return ids[: limit // 2] + ids[len(ids) - (limit - limit // 2):]
        raise DataError(f"data: prompt {index} has {len(ids)} tokens, more than max_prompt_length {limit}; set "
                        "data.filter_overlong_prompts: true or data.truncation: left|right|middle")


def _chat_text(tokenizer: Any, messages: list[dict[str, Any]], kwargs: dict[str, Any]) -> str:
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, **kwargs)
    except ValueError as err:  # transformers: "Cannot use chat template functions because ... not set"
        raise DataError(f"data: the tokenizer cannot apply a chat template ({err}); set "
                        "actor_rollout_ref.model.custom_chat_template") from None


# sampling ------------------------------------------------------------------------------------------------------
class EpochSampler:
    """Batches of indices, reshuffled each epoch from (seed, epoch); `state_dict` resumes mid-epoch exactly."""

    def __init__(self, n: int, batch_size: int, seed: int = 0, shuffle: bool = True, drop_last: bool = True) -> None:
        if n <= 0 or batch_size <= 0:
            raise DataError(f"sampler: need rows and a positive batch size, got {n} rows, batch size {batch_size}")
        self.n, self.batch_size, self.seed, self.shuffle, self.drop_last = n, batch_size, seed, shuffle, drop_last
        self.epoch, self.position = 0, 0
        self._cached: tuple[int, list[int]] | None = None

    @property
    def batches_per_epoch(self) -> int:
        return self.n // self.batch_size if self.drop_last else -(-self.n // self.batch_size)

    def order(self, epoch: int) -> list[int]:
        """The permutation of epoch `epoch`; a string seed is hashed with SHA-512, the same on every machine."""
        indices = list(range(self.n))
        if self.shuffle:
            random.Random(f"rlc-sampler:{self.seed}:{epoch}").shuffle(indices)
        return indices

    def next_batch(self) -> list[int]:
        if self.batches_per_epoch == 0:
            raise DataError(f"sampler: batch size {self.batch_size} is larger than the {self.n} rows")
        if self.position >= self.batches_per_epoch:
            self.epoch, self.position = self.epoch + 1, 0
        if self._cached is None or self._cached[0] != self.epoch:
            self._cached = (self.epoch, self.order(self.epoch))
        start = self.position * self.batch_size
        self.position += 1
        return self._cached[1][start:start + self.batch_size]

    def __iter__(self) -> Iterator[list[int]]:
        while True:
            yield self.next_batch()

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed, "n": self.n,
                "batch_size": self.batch_size}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        """Resume; a saved order that this sampler would not reproduce is an error, never a silent reshuffle."""
        for key in ("seed", "n", "batch_size"):
            if key in state and state[key] != getattr(self, key):
                raise DataError(f"sampler: the checkpoint was taken with {key} {state[key]}, this run has "
                                f"{getattr(self, key)}; resume with the same data and batch size, or start afresh")
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
