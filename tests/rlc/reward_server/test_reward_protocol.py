"""rl_verifier's wire protocol, spoken by the bundled server over real HTTP: /ping, every type, every 422."""

from __future__ import annotations

import httpx
import pytest

from rlc.reward_server.sandbox import network_isolation

MATH = {"type": "math_verifiable", "answer": {"value": "152"}}
SUM_PROGRAM = "Here it is:\n```python\na = int(input())\nb = int(input())\nprint(a + b)\n```\nDone."
SUM_TESTS = {"type": "code_verifiable", "answer": {"test_cases": [
    {"input": "3\n5", "output": "8"}, {"input": "-10\n4", "output": "-6"}, {"input": "1\n1", "output": "3"}]}}


NESTED_40: list = []
for _ in range(39):
    NESTED_40 = [NESTED_40]


def score(response: httpx.Response) -> float:
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"score"}  # rl_verifier answers the score and nothing else
    return body["score"]


def test_ping(reward_server):
    body = httpx.get(f"{reward_server.url}/ping").json()
    assert body["status"] == "ok"
    assert {"math_verifiable", "code_verifiable", "llm_judge", "exact_match", "regex"} <= set(body["types"])
    assert body["network_isolation"] is network_isolation()
    assert body["judge"] is False


@pytest.mark.parametrize(("output", "expected"), [
    ("Thus the value is \\( \\boxed{152} \\).", 1.0),
    ("\\boxed{150} first, then corrected: \\boxed{152}", 1.0),  # the last box counts
    ("\\boxed{152} first, then changed to \\boxed{150}", 0.0),
    ("The answer is 152.", 0.0),  # no \boxed{}: 0 without parsing, as rl_verifier
    ("unclosed \\boxed{152", 0.0),
    ("\\boxed{152.0}", 1.0),
    ("<think>\\boxed{1}</think><｜Assistant｜>So \\boxed{152}", 1.0),  # only what follows the assistant tag
    ("<think>\\boxed{152}</think><｜Assistant｜>So \\boxed{1}", 0.0),
])
def test_math(post, output, expected):
    assert score(post(output, MATH)) == expected


def test_math_equivalent_forms(post):
    half = {"type": "math_verifiable", "answer": {"value": "\\frac{1}{2}"}}
    assert score(post("\\boxed{0.5}", half)) == 1.0
    assert score(post("\\boxed{\\dfrac12}", half)) == 1.0
    assert score(post("\\boxed{1/3}", half)) == 0.0
    assert score(post("\\boxed{420}", {"type": "math_verifiable", "answer": {"value": 420}})) == 1.0


def test_code_fraction_passed(post):
    assert score(post(SUM_PROGRAM, SUM_TESTS)) == pytest.approx(2 / 3)  # rl_verifier's own example


def test_code_comparison_and_extraction(post):
    tolerant = {"type": "code_verifiable", "answer": {"test_cases": [{"input": "", "output": "YES\n0.3333333\n"}]}}
    assert score(post("```python\nprint('yes  ')\nprint(1/3)\n```", tolerant)) == 1.0
    assert score(post("print('yes')\nprint(1/3)", tolerant)) == 0.0  # no ```python block
    assert score(post("```\nprint('yes')\nprint(1/3)\n```", tolerant)) == 0.0  # not tagged python
    assert score(post("```python\nprint('no')\n```", tolerant)) == 0.0
    assert score(post("```python\nprint('yes'); print(1/3); raise SystemExit(1)\n```", tolerant)) == 0.0


@pytest.mark.parametrize(("vtype", "answer", "output", "expected"), [
    ("exact_match", {"value": "Paris"}, "Paris", 1.0),
    ("exact_match", {"value": "Paris"}, "It is \\boxed{Paris}", 1.0),
    ("exact_match", {"value": "Paris"}, "paris", 0.0),
    ("exact_match", {"value": ["Paris", "Paris, France"]}, "\\boxed{Paris, France}", 1.0),
    ("normalized_match", {"value": "The Eiffel Tower"}, "  eiffel   tower! ", 1.0),
    ("normalized_match", {"value": "Eiffel Tower"}, "\\boxed{the EIFFEL tower.}", 1.0),
    ("normalized_match", {"value": "Eiffel Tower"}, "Louvre", 0.0),
    ("multiple_choice", {"value": "B"}, "Reasoning... so the answer is (B).", 1.0),
    ("multiple_choice", {"value": "B"}, "Answer: C", 0.0),
    ("multiple_choice", {"value": "b"}, "\\boxed{B}", 1.0),
    ("multiple_choice", {"value": "B"}, "B", 1.0),
    ("multiple_choice", {"value": "B"}, "I cannot decide", 0.0),
    ("regex", {"pattern": r"\b42\b"}, "the result is 42.", 1.0),
    ("regex", {"pattern": r"\b42\b"}, "the result is 420.", 0.0),
    ("regex", {"pattern": r"\d+", "match": "full"}, "\\boxed{123}", 1.0),
    ("regex", {"pattern": r"\d+", "match": "full"}, "about 123", 0.0),
])
def test_string_types(post, vtype, answer, output, expected):
    assert score(post(output, {"type": vtype, "answer": answer})) == expected


@pytest.mark.parametrize(("verification_info", "detail"), [
    ("{not json", "must be a JSON string"),
    ({"answer": {"value": "1"}}, "must contain 'answer' and 'type'"),
    ({"type": "math_verifiable"}, "must contain 'answer' and 'type'"),
    ("[1, 2]", "must contain 'answer' and 'type'"),
    ({"type": "chess_verifiable", "answer": {}}, "'chess_verifiable' is not supported"),
    ({"type": "swe_verifiable", "answer": {"input": "a"}}, "must contain 'ground_truth'"),
    ({"type": ["math_verifiable"], "answer": {"value": "1"}}, "is not supported"),  # unhashable: was a 500
    ({"type": 5, "answer": {"value": "1"}}, "is not supported"),
    ('{"type": "math_verifiable", "answer": {"value": "\\ud800"}}', "lone surrogate"),
    ({"type": "math_verifiable", "answer": {"value": "1", "deep": NESTED_40}}, "nests more than 32 levels"),
    ('{"type": "math_verifiable", "answer": ' + "[" * 100_000 + "]" * 100_000 + "}", "must be a JSON string"),
    ({"type": "llm_judge", "answer": {"value": "x"}}, "llm_judge is not configured"),
    ({"type": "math_verifiable", "answer": "152"}, "answer must be an object"),
    ({"type": "math_verifiable", "answer": {"val": "152"}}, "must contain 'value'"),
    ({"type": "math_verifiable", "answer": {"value": None}}, "value must be str or int or float"),
    ({"type": "code_verifiable", "answer": {}}, "must contain 'test_cases'"),
    ({"type": "code_verifiable", "answer": {"test_cases": []}}, "test_cases is empty"),
    ({"type": "code_verifiable", "answer": {"test_cases": [{"input": "1"}]}}, "test_cases[0] must be an object"),
    ({"type": "code_verifiable", "answer": {"test_cases": [{"input": "", "output": ""}], "language": "cpp"}},
     "'cpp' is not supported"),
    ({"type": "regex", "answer": {"pattern": "(unclosed"}}, "invalid pattern"),
    ({"type": "regex", "answer": {"pattern": "(?=x)"}}, "no lookaround"),
    ({"type": "multiple_choice", "answer": {"value": "Paris"}}, "must be option letters"),
    ({"type": "exact_match", "answer": {"value": []}}, "non-empty list of strings"),
])
def test_unscorable_requests_are_422_with_a_reason(post, verification_info, detail):
    response = post("\\boxed{152}\n```python\nprint(1)\n```", verification_info)
    assert response.status_code == 422
    assert detail in response.json()["detail"]


def test_malformed_request_body_is_422(reward_server):
    response = httpx.post(f"{reward_server.url}/reward", json={"llm_output": "x"})
    assert response.status_code == 422
    assert "verification_info" in response.text
    assert httpx.post(f"{reward_server.url}/reward", content=b"not json").status_code == 422


def test_request_log_records_each_scored_request(reward_server, post):
    from rlc.reward_server.app import sample_id

    info = '{"type": "exact_match", "answer": {"value": "logged"}}'
    assert score(post("logged", info)) == 1.0
    log = (reward_server.options["request_log"])
    with open(log) as f:
        lines = [line for line in f if sample_id("logged", info) in line]
    assert len(lines) == 1 and '"score": 1.0' in lines[0]
