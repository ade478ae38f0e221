"""Prompts from both row formats, overlong handling, and a sampler that resumes exactly."""

from pathlib import Path

import pytest
from transformers import AutoTokenizer

from rlc.config.data import Data
from rlc_runtime.data import DataError, EpochSampler, PromptDataset, load_rows

ROOT = Path(__file__).parents[2]
TOKENIZER = AutoTokenizer.from_pretrained(ROOT / "examples" / "models" / "tiny-qwen2")


@pytest.mark.parametrize("name", ["arith_train.parquet", "arith_train.jsonl"])
def test_both_row_formats(name: str) -> None:
    data = Data(train_files=str(ROOT / "examples" / "data" / name), max_prompt_length=16, train_max_samples=5)
    items = PromptDataset(load_rows(data.train_files, data), TOKENIZER, data)
    assert len(items) == 5
    item = items[0]
    assert item["prompt_text"].startswith("<|user|>") and item["prompt_text"].endswith("<|assistant|>")
    assert TOKENIZER.decode(item["input_ids"]) == item["prompt_text"]
    assert item["data_source"] == "arith" and "11" in str(item["ground_truth"])


def test_overlong_prompts(tmp_path: Path) -> None:
    file = tmp_path / "long.jsonl"
    file.write_text('{"prompt": "1+1=1+1=1+1=1+1=1+1=", "data_source": "x"}\n{"prompt": "1+1=", "data_source": "x"}\n')
    strict = Data(train_files=str(file), max_prompt_length=6)
    with pytest.raises(DataError, match="more than max_prompt_length 6"):
        PromptDataset(load_rows(strict.train_files, strict), TOKENIZER, strict)
    filtered = strict.model_copy(update={"filter_overlong_prompts": True})
    assert len(PromptDataset(load_rows(filtered.train_files, filtered), TOKENIZER, filtered)) == 1
    left = strict.model_copy(update={"truncation": "left"})
    assert all(len(i["input_ids"]) <= 6 for i in PromptDataset(load_rows(left.train_files, left), TOKENIZER, left))


def test_missing_and_unknown_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_rows(str(tmp_path / "x.parquet"), Data(train_files="x"))
    with pytest.raises(DataError, match="unknown file type"):
        load_rows(str(tmp_path / "x.txt"), Data(train_files="x"))


def test_sampler_resumes_exactly() -> None:
    straight = EpochSampler(10, 3, seed=7)
    expected = [straight.next_batch() for _ in range(9)]  # crosses two epoch boundaries (3 batches per epoch)
    first = EpochSampler(10, 3, seed=7)
    seen = [first.next_batch() for _ in range(4)]
    resumed = EpochSampler(10, 3, seed=7)
    resumed.load_state_dict(first.state_dict())
    assert seen + [resumed.next_batch() for _ in range(5)] == expected
    assert expected[0] != expected[3]  # reshuffled per epoch
