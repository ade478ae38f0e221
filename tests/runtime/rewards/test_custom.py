"""Custom reward functions loaded from a file: the good case, and one clear error for each way it can be wrong."""

from pathlib import Path

import pytest

from rlc_runtime.rewards.custom import RewardFunctionError, load_reward_function


def write(tmp_path: Path, name: str, source: str) -> str:
    file = tmp_path / name
    file.write_text(source)
    return str(file)


def test_loads_and_calls_the_named_function(tmp_path: Path) -> None:
    path = write(tmp_path, "reward.py",
                 "from dataclasses import dataclass\n\n"
                 "@dataclass\n"  # needs its module in sys.modules while the file runs
                 "class Weight:\n    value: float = 2.0\n\n"
                 "def my_score(data_source, solution_str, ground_truth, extra_info=None):\n"
                 "    return Weight().value * float(solution_str == ground_truth)\n")
    fn = load_reward_function(path, "my_score")
    assert fn("src", "a", "a", None) == 2.0 and fn("src", "a", "b", {}) == 0.0


def test_accepts_verl_style_kwargs_signatures(tmp_path: Path) -> None:
    path = write(tmp_path, "reward.py", "def compute_score(data_source, solution_str, ground_truth, **kwargs):\n"
                                        "    return {'score': 1.0, 'acc': 1}\n")
    fn = load_reward_function(path)  # verl calls by keyword; the manager may pass positions: both work
    assert fn("s", "x", "y", None) == {"score": 1.0, "acc": 1}
    assert fn(data_source="s", solution_str="x", ground_truth="y") == {"score": 1.0, "acc": 1}


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(RewardFunctionError, match="custom_reward_function.path: .*nope.py does not exist"):
        load_reward_function(str(tmp_path / "nope.py"))


def test_import_error_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "broken.py", "import os\nimport nonexistent_module_xyz\n")
    with pytest.raises(RewardFunctionError,
                       match=r"broken.py:2: import nonexistent_module_xyz: ModuleNotFoundError: No module named"):
        load_reward_function(path)


def test_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "typo.py", "def compute_score(a, b, c, d):\n    return (1\n\nx = 2\n")
    with pytest.raises(RewardFunctionError, match=r"typo.py:2: return \(1: SyntaxError"):
        load_reward_function(path)


def test_error_raised_inside_the_file_names_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, "raises.py", "x = 1\nraise RuntimeError('no config')\n")
    with pytest.raises(RewardFunctionError, match=r"raises.py:2: raise RuntimeError.*RuntimeError: no config"):
        load_reward_function(path)


def test_missing_or_non_callable_name(tmp_path: Path) -> None:
    path = write(tmp_path, "reward.py", "compute_score = 3\n")
    with pytest.raises(RewardFunctionError, match="custom_reward_function.name: `missing` is not defined in"):
        load_reward_function(path, "missing")
    with pytest.raises(RewardFunctionError, match="`compute_score` is not a function in"):
        load_reward_function(path)


@pytest.mark.parametrize("params", ["solution_str, ground_truth", "source, solution, truth, info"])
def test_signature_that_cannot_take_the_four_arguments(tmp_path: Path, params: str) -> None:
    path = write(tmp_path, "reward.py", f"def compute_score({params}):\n    return 0.0\n")
    with pytest.raises(RewardFunctionError, match=r"cannot be called as compute_score\(data_source=..., solution_str"):
        load_reward_function(path)
    with pytest.raises(ValueError):  # RewardFunctionError is a ValueError, for callers that catch those
        load_reward_function(path)
