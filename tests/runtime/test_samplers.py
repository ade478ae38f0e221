"""A sampler class of the user's, loaded and driven as verl's `create_rl_sampler` and DataLoader drive it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from rlc.config.data import Data
from rlc_runtime.data import DataError
from rlc_runtime.samplers import UserSampler

# Longest prompt first, as a length curriculum might; the config reaches it as verl's DictConfig would
# (attribute access and .get); `update` records what the trainer gives it.
SAMPLER = '''
class LongestFirst:
    def __init__(self, data_source, data_config):
        assert data_config.train_batch_size == data_config.get("train_batch_size") == 2
        assert data_config.sampler.class_name == "LongestFirst"
        self.order = sorted(range(len(data_source)), key=lambda i: -len(data_source[i]))
        self.updates = []

    def __iter__(self):
        return iter(self.order)

    def __len__(self):
        return len(self.order)

    def update(self, batch):
        self.updates.append(batch)
'''
ROWS = ["a", "bbbb", "cc", "ddddd", "eee"]  # longest first: 3, 1, 4, 2, 0


def data(class_path: str, batch: int = 2) -> Any:
    config = Data(train_files="unused.parquet", train_batch_size=batch)
    config.sampler.class_path, config.sampler.class_name = class_path, "LongestFirst"
    return config


@pytest.fixture
def sampler_file(tmp_path: Path) -> Path:
    file = tmp_path / "curriculum.py"
    file.write_text(SAMPLER)
    return file


def test_batches_follow_the_users_order_and_resume_where_they_stopped(sampler_file: Path) -> None:
    sampler = UserSampler.build(data(str(sampler_file)), ROWS)
    assert sampler.batches_per_epoch == 2  # 5 indices in batches of 2, the last partial batch dropped
    assert [sampler.next_batch() for _ in range(3)] == [[3, 1], [4, 2], [3, 1]]  # epoch 2 starts over
    state = sampler.state_dict()
    resumed = UserSampler.build(data(f"file://{sampler_file}"), ROWS)
    resumed.load_state_dict(state)
    assert resumed.next_batch() == sampler.next_batch() == [4, 2]
    sampler.update("the step's batch")
    assert sampler.user.updates == ["the step's batch"]


def test_a_pkg_module_is_imported_by_name(sampler_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(sampler_file.parent))
    assert UserSampler.build(data("pkg://curriculum"), ROWS).next_batch() == [3, 1]


def test_a_broken_sampler_is_one_clear_message(sampler_file: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="cannot import no_such_pkg_x: No module named 'no_such_pkg_x'"):
        UserSampler.build(data("pkg://no_such_pkg_x"), ROWS)
    with pytest.raises(DataError, match="has no class 'LongestFirst'"):
        (tmp_path / "empty.py").write_text("")
        UserSampler.build(data(str(tmp_path / "empty.py")), ROWS)
    with pytest.raises(DataError, match=r"LongestFirst\(data_source, data_config\) failed: AssertionError"):
        UserSampler.build(data(str(sampler_file), batch=3), ROWS)
    sampler_file.write_text(SAMPLER.replace("return iter(self.order)", "return iter([7, 0])"))
    with pytest.raises(DataError, match="gave index 7, outside the 5 training rows"):
        UserSampler.build(data(str(sampler_file)), ROWS).next_batch()


def test_verls_example_sampler_is_a_seeded_shuffle_per_epoch() -> None:
    config = data("pkg://rlc_runtime.samplers", batch=2)
    config.sampler.class_name = "RandomCurriculumSampler"
    rows = [str(i) for i in range(6)]
    sampler = UserSampler.build(config, rows)
    epochs = [sorted(sampler.next_batch() + sampler.next_batch() + sampler.next_batch()) for _ in range(2)]
    assert epochs == [list(range(6))] * 2  # each epoch is a permutation of the rows
    first = [UserSampler.build(config, rows).next_batch() for _ in range(2)]
    assert first[0] == first[1]  # seeded: a fresh run draws the same order
    orders = {tuple(sampler.order(epoch)) for epoch in range(4)}
    assert len(orders) == 4  # and a new one each epoch
    resumed = UserSampler.build(config, rows)
    resumed.load_state_dict({"epoch": 3, "position": 1})
    assert resumed.next_batch() == sampler.order(3)[2:4]  # a resume draws its epoch's order again
