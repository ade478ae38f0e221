"""Rule rewards by data source, including seed 003's verification_info strings, and custom functions."""

import json
from pathlib import Path

import pytest

from rlc_runtime.rewards.custom import RewardFunctionError, load_reward_function
from rlc_runtime.rewards.rules import compute_score


@pytest.mark.parametrize(("source", "response", "truth", "score"), [
    ("openai/gsm8k", "so the total is #### 72", "72", 1.0),
    ("openai/gsm8k", "I think 1,234 apples", "1234", 1.0),
    ("openai/gsm8k", "#### 71", "72", 0.0),
    ("lighteval/MATH", "so \\boxed{\\frac{1}{2}}", "0.5", 1.0),
    ("math", "the answer is \\boxed{152}", "\\boxed{152}", 1.0),
    ("math", "\x00\x01 ]]} garbage {{", "3", 0.0),
    ("arith", "11", "11", 1.0),
    ("arith", "", "11", 0.0),
    ("any", "\\boxed{420}", json.dumps({"type": "math_verifiable", "answer": {"value": "420"}}), 1.0),
    ("any", "Paris.", json.dumps({"type": "exact_match", "answer": {"value": "paris"}}), 1.0),
])
def test_scores(source: str, response: str, truth: str, score: float) -> None:
    assert compute_score(source, response, truth) == score


def test_custom_function(tmp_path: Path) -> None:
    file = tmp_path / "reward.py"
    file.write_text("def my_score(data_source, solution_str, ground_truth, extra_info=None):\n"
                    "    return float(solution_str == ground_truth)\n")
    assert load_reward_function(str(file), "my_score")("x", "a", "a", None) == 1.0
    with pytest.raises(RewardFunctionError, match="has no function `missing`"):
        load_reward_function(str(file), "missing")
    with pytest.raises(RewardFunctionError, match="does not exist"):
        load_reward_function(str(tmp_path / "nope.py"))
    (tmp_path / "broken.py").write_text("import nonexistent_module_xyz\n")
    with pytest.raises(RewardFunctionError, match="ModuleNotFoundError"):
        load_reward_function(str(tmp_path / "broken.py"))
