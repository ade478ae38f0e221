"""Rows from files, folders and saved datasets; both row formats; overlong prompts; a sampler that resumes exactly."""

import json
import shutil
from pathlib import Path

import datasets
import pytest

from rlc.config.data import Data
from rlc_runtime.data import DataError, EpochSampler, PromptDataset, load_rows, load_split
from rlc_runtime.tiny import build_tokenizer, task_texts

DATA = Path(__file__).parents[2] / "examples" / "data"
TOKENIZER = build_tokenizer(task_texts())


def options(**changes: object) -> Data:
    return Data(train_files="unused", max_prompt_length=16).model_copy(update=changes)


def test_verl_parquet_rows() -> None:
    rows = load_rows(str(DATA / "arith_train.parquet"))
    item = PromptDataset(rows, TOKENIZER, options())[0]
    assert item["prompt_text"] == "<|bos|><|user|>2+9=<|assistant|>"
    assert TOKENIZER.decode(item["input_ids"]) == item["prompt_text"]
    assert (item["index"], item["data_source"], item["ground_truth"]) == (0, "arith", "11")
    assert item["raw_prompt"] == [{"role": "user", "content": "2+9="}] and item["extra_info"]["answer"] == "11"
    assert item["verification_info"] is None


def test_seed003_jsonl_rows() -> None:
    items = PromptDataset(load_rows([str(DATA / "arith_test.jsonl")]), TOKENIZER, options())
    assert len(items) == 64
    info = json.loads(items[5]["verification_info"])
    assert info["type"] == "exact_match" and items[5]["ground_truth"] == items[5]["verification_info"]
    assert items[5]["prompt_text"].endswith("<|assistant|>")


def test_plain_text_prompts_under_prompt_key(tmp_path: Path) -> None:
    file = tmp_path / "q.json"
    file.write_text(json.dumps([{"question": "1+1=", "reward_model": {"ground_truth": "2"}}]))
    item = PromptDataset(load_rows(str(file)), TOKENIZER, options(prompt_key="question"))[0]
    assert item["prompt_text"] == "<|bos|><|user|>1+1=<|assistant|>"
    assert (item["ground_truth"], item["data_source"]) == ("2", "unknown")


def test_hub_layout_folder_and_split(tmp_path: Path) -> None:
    # The Hub path is `datasets.load_dataset(id, revision=..., split=...)`; no test downloads, so a folder laid out
    # as a Hub dataset repository goes through the same call and the same split selection.
    (tmp_path / "data").mkdir()
    shutil.copy(DATA / "arith_train.parquet", tmp_path / "data" / "train-00000-of-00001.parquet")
    shutil.copy(DATA / "arith_test.parquet", tmp_path / "data" / "test-00000-of-00001.parquet")
    assert len(load_rows(str(tmp_path), split="train")) == 400
    assert len(load_rows(str(tmp_path), split="test")) == 64
    with pytest.raises(DataError, match="Unknown split"):
        load_rows(str(tmp_path), split="validation")


def test_saved_dataset_and_config_split(tmp_path: Path) -> None:
    rows = load_rows(str(DATA / "arith_test.parquet"))
    datasets.DatasetDict({"train": rows, "test": rows.select(range(3))}).save_to_disk(str(tmp_path / "saved"))
    data = Data(train_files=str(tmp_path / "saved"), val_files=str(tmp_path / "saved"), train_max_samples=10)
    assert (len(load_split(data)), len(load_split(data, val=True))) == (10, 3)


def test_several_files_concatenate(tmp_path: Path) -> None:
    assert len(load_rows([str(DATA / "arith_test.parquet"), str(DATA / "arith_train.parquet")])) == 464
    mixed = PromptDataset(load_rows([str(DATA / "arith_test.parquet"), str(DATA / "arith_test.jsonl")]), TOKENIZER,
                          options())  # verl rows and seed 003 rows side by side: each row is read by its own format
    assert mixed[0]["raw_prompt"] == mixed[64]["raw_prompt"] and mixed[0]["ground_truth"] == "1"
    assert json.loads(mixed[64]["ground_truth"])["answer"]["value"] == "1"
    (tmp_path / "a.jsonl").write_text('{"prompt": "1+1="}\n')
    (tmp_path / "b.jsonl").write_text('{"prompt": [{"role": "user", "content": "1+1="}]}\n')
    with pytest.raises(DataError, match="a.jsonl, .*b.jsonl cannot be combined into one dataset: .*prompt"):
        load_rows([str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl")])


@pytest.mark.parametrize(("name", "content", "message"), [
    ("missing.parquet", None, "does not exist"),
    ("missing", None, "does not exist"),
    ("notes.txt", "1+1=", "unknown file type '.txt'"),
    ("empty.jsonl", "", "cannot load"),
    ("no_rows.json", "[]", "cannot load|holds no rows"),
])
def test_bad_files(tmp_path: Path, name: str, content: str | None, message: str) -> None:
    if content is not None:
        (tmp_path / name).write_text(content)
    with pytest.raises(DataError, match=message):
        load_rows(str(tmp_path / name))


def test_bad_rows(tmp_path: Path) -> None:
    file = tmp_path / "rows.jsonl"
    file.write_text('{"query": "1+1="}\n')
    with pytest.raises(DataError, match="no `prompt` .* column; their columns: query"):
        PromptDataset(load_rows(str(file)), TOKENIZER, options())
    file.write_text('{"prompt": [{"text": "1+1="}]}\n')
    with pytest.raises(DataError, match="row 0: the prompt must be text or a list of"):
        PromptDataset(load_rows(str(file)), TOKENIZER, options())


def test_overlong_prompts(tmp_path: Path) -> None:
    file = tmp_path / "long.jsonl"
    file.write_text('{"prompt": "1+2=3+4=5+6=7+8="}\n{"prompt": "1+1="}\n')
    rows = load_rows(str(file))
    full = PromptDataset(rows, TOKENIZER, options(max_prompt_length=64))[0]["input_ids"]
    assert len(full) > 10
    with pytest.raises(DataError, match=f"prompt 0 has {len(full)} tokens, more than max_prompt_length 10"):
        PromptDataset(rows, TOKENIZER, options(max_prompt_length=10))
    kept = PromptDataset(rows, TOKENIZER, options(max_prompt_length=10, filter_overlong_prompts=True))
    assert [item["index"] for item in kept] == [1]
    expected = {"left": full[-10:], "right": full[:10], "middle": full[:5] + full[-5:]}
    for mode, ids in expected.items():
        assert PromptDataset(rows, TOKENIZER, options(max_prompt_length=10, truncation=mode))[0]["input_ids"] == ids
    with pytest.raises(DataError, match="every prompt is longer"):
        PromptDataset(rows, TOKENIZER, options(max_prompt_length=3, filter_overlong_prompts=True))


def test_sampler_resumes_exactly() -> None:
    straight = EpochSampler(10, 3, seed=7)
    expected = [straight.next_batch() for _ in range(12)]  # 3 batches per epoch: crosses three epoch boundaries
    first = EpochSampler(10, 3, seed=7)
    seen = [first.next_batch() for _ in range(7)]
    resumed = EpochSampler(10, 3, seed=7)
    resumed.load_state_dict(json.loads(json.dumps(first.state_dict())))  # as a checkpoint stores it
    assert seen + [resumed.next_batch() for _ in range(5)] == expected
    assert expected[0] != expected[3] and sorted(sum(expected[:3], [])) != list(range(10))  # reshuffled, 1 dropped
    assert EpochSampler(10, 3, seed=8).next_batch() != expected[0]


def test_sampler_options() -> None:
    ordered = EpochSampler(10, 4, shuffle=False, drop_last=False)
    assert [ordered.next_batch() for _ in range(4)] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9], [0, 1, 2, 3]]
    with pytest.raises(DataError, match="taken with n 10, this run has 11"):
        EpochSampler(11, 4).load_state_dict(ordered.state_dict())
    with pytest.raises(DataError, match="larger than the 3 rows"):
        EpochSampler(3, 4).next_batch()
