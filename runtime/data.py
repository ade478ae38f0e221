"""Prompts from local files or Hugging Face datasets, tokenized with the chat template, and a resumable sampler.

Two row formats are understood: verl's (`prompt` messages or text under `data.prompt_key`,
`reward_model.ground_truth`, `data_source`) and seed 003's (`messages` + a `verification_info` JSON string).
The sampler's order depends only on (seed, epoch), and its position is part of every checkpoint, so a resumed run
draws exactly the batches an uninterrupted run would have.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

EXTENSIONS = {".parquet": "parquet", ".json": "json", ".jsonl": "json", ".csv": "csv", ".arrow": "arrow"}


class DataError(ValueError):
    pass


def load_rows(files: str | list[str] | None, data: Any, val: bool = False) -> Any:
    """A `datasets.Dataset` of the rows in `files` (paths, folders or Hub ids at their pinned revisions)."""
    import datasets

    names = [files] if isinstance(files, str) else list(files or [])
    if not names:
        raise DataError("data: no files given")
    parts = [_load_one(name, data, val) for name in names]
    rows = parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)
    limit = data.val_max_samples if val else data.train_max_samples
    if limit and limit > 0:
        rows = rows.select(range(min(limit, len(rows))))
    if len(rows) == 0:
        raise DataError(f"data: {', '.join(names)} holds no rows")
    return rows


def _load_one(name: str, data: Any, val: bool) -> Any:
    import datasets

    path = Path(name).expanduser()
    datasets.disable_progress_bars()
    if path.is_dir():
        files = sorted(str(p) for p in path.iterdir() if p.suffix in EXTENSIONS)
        if not files:
            raise DataError(f"data: {path} holds no {', '.join(EXTENSIONS)} files")
        return datasets.load_dataset(EXTENSIONS[Path(files[0]).suffix], data_files=files, split="train")
    if path.suffix in EXTENSIONS:
        if not path.exists():
            raise DataError(f"data: {path} does not exist")
        return datasets.load_dataset(EXTENSIONS[path.suffix], data_files=str(path), split="train")
    if path.suffix:
        raise DataError(f"data: {path}: unknown file type {path.suffix!r}; use {', '.join(EXTENSIONS)}")
    revision = data.revisions.get(name) or data.revision
    split = data.val_split if val else data.train_split
    try:
        return datasets.load_dataset(name, revision=revision, split=split)
    except Exception as err:  # the datasets library raises many types; one message names the dataset
        raise DataError(f"data: cannot load Hugging Face dataset {name!r} ({split}, revision {revision}): "
                        f"{type(err).__name__}: {err}") from None


class PromptDataset:
    """Rows -> tokenized prompts with what the reward needs; overlong prompts filtered or truncated."""

    def __init__(self, rows: Any, tokenizer: Any, data: Any) -> None:
        self.tokenizer, self.data = tokenizer, data
        self.items = [item for index, row in enumerate(rows) if (item := self._item(index, row)) is not None]
        if not self.items:
            raise DataError(f"data: every prompt is longer than max_prompt_length {data.max_prompt_length}")

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.items[index]

    def _item(self, index: int, row: dict[str, Any]) -> dict[str, Any] | None:
        data = self.data
        prompt = row.get(data.prompt_key) if data.prompt_key in row else row.get("messages")
        if prompt is None:
            raise DataError(f"data: row {index} has neither `{data.prompt_key}` nor `messages`")
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                                  **data.apply_chat_template_kwargs)
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        ids = self._fit(ids, index)
        if ids is None:
            return None
        reward_model = row.get("reward_model") or {}
        return {"index": index, "input_ids": ids, "prompt_text": text,
                "data_source": row.get(data.reward_fn_key) or row.get("data_source") or "unknown",
                "ground_truth": reward_model.get("ground_truth", row.get("verification_info")),
                "verification_info": row.get("verification_info"), "extra_info": row.get("extra_info")}

    def _fit(self, ids: list[int], index: int) -> list[int] | None:
        limit, data = self.data.max_prompt_length, self.data
        if len(ids) <= limit:
            return ids
        if data.filter_overlong_prompts:
            return None
        if data.truncation == "left":
            return ids[-limit:]
        if data.truncation == "right":
            return ids[:limit]
        if data.truncation == "middle":
            return ids[: limit // 2] + ids[len(ids) - (limit - limit // 2):]
        raise DataError(f"data: prompt {index} has {len(ids)} tokens, more than max_prompt_length {limit}; set "
                        "data.filter_overlong_prompts: true or data.truncation: left|right|middle")


class EpochSampler:
    """Batches of indices, reshuffled each epoch from (seed, epoch); `state_dict` resumes mid-epoch exactly."""

    def __init__(self, size: int, batch_size: int, shuffle: bool = True, seed: int = 42) -> None:
        self.size, self.batch_size, self.shuffle, self.seed = size, batch_size, shuffle, seed
        self.epoch, self.position = 0, 0

    @property
    def batches_per_epoch(self) -> int:
        return self.size // self.batch_size

    def _order(self) -> list[int]:
        if not self.shuffle:
            return list(range(self.size))
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return torch.randperm(self.size, generator=generator).tolist()

    def next_batch(self) -> list[int]:
        if self.position >= self.batches_per_epoch:
            self.epoch, self.position = self.epoch + 1, 0
        start = self.position * self.batch_size
        self.position += 1
        return self._order()[start:start + self.batch_size]

    def __iter__(self) -> Iterator[list[int]]:
        while True:
            yield self.next_batch()

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.position = state["epoch"], state["position"]
