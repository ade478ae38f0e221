"""Rule rewards by data source, seed 003's verification_info strings, garbage, and math-verify off the main thread."""

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from rlc_runtime.rewards import rules
from rlc_runtime.rewards.rules import compute_score, extract_gsm8k_answer, gsm8k_score, last_boxed_content

MATH_INFO = json.dumps({"type": "math_verifiable", "answer": {"value": "152"}})


@pytest.mark.parametrize(("source", "response", "truth", "score"), [
    # GSM8K: verl's strict format, the number after ####
    ("openai/gsm8k", "3 + 4 = 7 so ... #### 72", "72", 1.0),
    ("gsm8k", "#### 1,234.", "1234", 1.0),
    ("openai/gsm8k", "#### $72", "72.0", 1.0),
    ("openai/gsm8k", "#### 71", "72", 0.0),
    ("openai/gsm8k", "I think 72 apples", "72", 0.0),  # right number, wrong format: strict gives nothing
    ("openai/gsm8k", "#### 72", "Natalia sold 48/2 = 24 clips ... #### 72", 1.0),  # a raw GSM8K answer as truth
    # math through math-verify
    ("lighteval/MATH", "so \\boxed{\\frac{1}{2}}", "0.5", 1.0),
    ("DigitalLearningGmbH/MATH-lighteval", "so \\boxed{0.5}", "\\frac{1}{2}", 1.0),
    ("math", "the answer is \\boxed{152}", "\\boxed{152}", 1.0),
    ("math_dapo", "first \\boxed{7}, no wait: \\boxed{152}", "152", 1.0),  # the last box counts
    ("math", "\\boxed{152} is wrong, it is \\boxed{7}", "152", 0.0),
    ("aime2024", "\\boxed{(x+1)^2}", "x^2+2x+1", 1.0),
    ("math", "The answer is 11.", "11", 1.0),  # no box: the last expression of the text
    # exact match
    ("exact_match", "Paris.", "paris", 1.0),
    ("exact_match", "\\boxed{ Paris }", "Paris", 1.0),
    ("exact_match", "Lyon", "Paris", 0.0),
    # unknown sources: math-verify for mathematical truths, exact match for words
    ("arith", "11", "11", 1.0),
    ("arith", "", "11", 0.0),
    ("trivia", "paris", "Paris", 1.0),
    ("trivia", "sirap", "Paris", 0.0),  # math-verify would call both a*i*p*r*s
    # seed 003's verification_info, as a JSON string or already parsed
    ("any", "\\boxed{152}", MATH_INFO, 1.0),
    ("any", "\\boxed{153}", MATH_INFO, 0.0),
    ("any", "\\boxed{152}", json.loads(MATH_INFO), 1.0),
    ("openai/gsm8k", "152", MATH_INFO, 1.0),  # the row's type wins over its source
    ("any", "Paris.", json.dumps({"type": "exact_match", "answer": {"value": "paris"}}), 1.0),
    ("math", "\\boxed{\\{1, 2\\}}", "{1, 2}", 1.0),  # a set answer that looks like JSON but is not
])
def test_scores(source: str, response: str, truth: Any, score: float) -> None:
    assert compute_score(source, response, truth) == score


@pytest.mark.parametrize("response", [
    "", None, "\x00\x01 ]]} garbage {{", "\\boxed{", "\\boxed{3", "\\boxed{}", "}}}}\\frac{", "🙂" * 50,
    "$$$$", "\\left( \\right", "#" * 10_000, "1" * 5000 + "\\boxed{\\sqrt{}}",
])
@pytest.mark.parametrize("source", ["math", "openai/gsm8k", "exact_match", "other"])
def test_garbage_scores_zero_and_never_raises(source: str, response: Any) -> None:
    assert compute_score(source, response, "3") == 0.0


def test_bad_ground_truth_is_a_clear_data_error() -> None:
    with pytest.raises(ValueError, match="type 'code_verifiable' cannot be scored by the built-in rules"):
        compute_score("any", "x", json.dumps({"type": "code_verifiable", "answer": {"value": "x"}}))
    with pytest.raises(ValueError, match="has no answer"):
        compute_score("any", "x", {"type": "math_verifiable"})


def test_gsm8k_flexible_and_scores() -> None:
    assert extract_gsm8k_answer("so 3 apples, then 1,234.", "flexible") == "1234"
    assert extract_gsm8k_answer("no numbers here", "strict") is None
    assert gsm8k_score("#### 7", "72", format_score=0.1) == 0.1  # formatted but wrong
    assert gsm8k_score("I think 72", "72", method="flexible") == 1.0


def test_last_boxed_content_balances_braces() -> None:
    assert last_boxed_content("\\boxed{1} and \\boxed{\\frac{a}{b}} end") == "\\frac{a}{b}"
    assert last_boxed_content("\\fbox{x}") == "x"
    assert last_boxed_content("\\boxed{unclosed") is None
    assert last_boxed_content("no box") is None


def test_pathological_answer_times_out_on_the_main_thread() -> None:
    start = time.monotonic()  # sympy would try 9^(9^(9^9)); math-verify's alarm stops it after 1 s
    assert rules.math_score("\\boxed{9^{9^{9^{9}}}}", "5", timeout_s=1) == 0.0
    assert time.monotonic() - start < 4


def _in_thread(fn: Callable[[], Any]) -> Any:
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(fn()))
    thread.start()
    thread.join(timeout=60)
    return result[0]


def test_math_verify_works_off_the_main_thread() -> None:
    # math-verify's own timeouts raise ValueError off the main thread; here the helper process scores instead
    assert _in_thread(lambda: compute_score("math", "so \\boxed{\\frac{1}{2}}", "0.5")) == 1.0
    assert _in_thread(lambda: compute_score("math", "so \\boxed{\\frac{1}{3}}", "0.5")) == 0.0
    start = time.monotonic()
    assert _in_thread(lambda: rules.math_score("\\boxed{9^{9^{9^{9}}}}", "5", timeout_s=1)) == 0.0
    assert time.monotonic() - start < 4  # stopped by the helper's own alarm: the helper lives on
    proc = rules._helper.proc
    assert proc is not None and proc.poll() is None


def test_helper_that_misses_its_deadline_is_replaced() -> None:
    # A computation SIGALRM cannot interrupt is hard to produce on purpose; a deadline shorter than the
    # helper's own alarm takes the same path: no answer in time -> 0, the helper killed, a fresh one next time.
    _in_thread(lambda: rules.math_score("\\boxed{1}", "1"))  # make sure a helper is running
    first = rules._helper.proc
    assert _in_thread(lambda: rules._helper.score("\\boxed{9^{9^{9^{9}}}}", "5", 5, deadline_s=0.3)) == 0.0
    assert first is not None and first.poll() is not None
    assert _in_thread(lambda: rules.math_score("\\boxed{152}", "152")) == 1.0
    assert rules._helper.proc is not first
