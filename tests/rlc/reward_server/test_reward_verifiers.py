"""The scoring rules as plain functions, and the server's settings checks (no HTTP needed)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from rlc.reward_server import ServerConfig, serve
from rlc.reward_server.verifiers.code_tests import same_output
from rlc.reward_server.verifiers.extract import assistant_response, boxed_content, last_boxed, python_code
from rlc.reward_server.verifiers.format_check import EOS_TOKEN, format_score
from rlc.reward_server.verifiers.strings import choice, normalize


@pytest.mark.parametrize(("text", "boxed"), [
    ("a \\boxed{1} b \\boxed{\\frac{1}{2}} c", "\\boxed{\\frac{1}{2}}"),
    ("no box", None),
    ("\\boxed{1", None),
    ("\\boxed 5 }", None),  # a closing brace before any opening one never balances
    ("\\boxed{{a}{b}}", "\\boxed{{a}{b}}"),
])
def test_last_boxed(text, boxed):
    assert last_boxed(text) == boxed


def test_boxed_content_and_assistant_tag():
    assert boxed_content("x \\boxed{\\text{B}}") == "\\text{B}"
    assert assistant_response("user: hi<｜Assistant｜>  answer  ") == "answer"
    assert assistant_response("  no tag ") == "no tag"


def test_python_code_takes_the_first_python_block():
    text = "```bash\nls\n```\n```py\nprint(1)\n```\n```python\nprint(2)\n```"
    assert python_code(text) == "print(1)"
    assert python_code("```python\nprint(1)```") is None  # Sandbox Fusion wants a newline before the fence


@pytest.mark.parametrize(("actual", "expected", "same"), [
    ("8\n", "8", True),
    ("  Yes \n", "yes", True),
    ("0.33333334", "0.3333333", True),
    ("0.334", "0.333", False),
    ("1\n2", "1", False),
    ("", "", True),
    ("1 2", "1  2", False),  # whitespace inside a line matters
])
def test_same_output(actual, expected, same):
    assert same_output(actual, expected) is same


def test_normalize_and_choice():
    assert normalize("  The Quick,  brown FOX! ") == "quick brown fox"
    assert normalize("Ｐａｒｉｓ") == "paris"  # full-width forms
    assert choice("I think the answer is: (d)") == "D"
    assert choice("Answer: A. Wait, no. The answer is C") == "C"
    assert choice("\\boxed{\\text{(B)}}") == "B"
    assert choice("B.") == "B"
    assert choice("Both are wrong") is None


def test_format_score_is_rl_verifiers_rules():
    good = f"<think>hmm</think> so \\boxed{{1}}{EOS_TOKEN}"
    assert format_score(good, "math_verifiable", {}) == 1.0
    assert format_score(good.replace(EOS_TOKEN, ""), "math_verifiable", {}) == 0.0
    assert format_score(good.replace("<think>", ""), "math_verifiable", {}) == 0.0
    assert format_score(good.replace("hmm", "想"), "math_verifiable", {}) == 0.0
    assert format_score(good, "code_verifiable", {}) == 0.0  # no code block


def test_settings_are_checked_before_anything_starts():
    with pytest.raises(ValueError, match="judge_url must start with http") as e:
        ServerConfig(judge_url="localhost:8002", code_memory_mb=16)
    assert "code_memory_mb must be >= 64" in str(e.value)  # every problem at once
    with pytest.raises(ValueError, match="port must be between"):
        serve(port=70000)
    with pytest.raises(ValueError, match="workers must be >= 1"):
        serve(workers=0)
    config = ServerConfig(judge_url="http://127.0.0.1:1/v1", max_sandboxes=3)
    assert ServerConfig(**json.loads(config.to_env())) == config


def test_importing_the_package_does_not_import_the_server_stack():
    code = ("import sys, rlc.reward_server; "
            "print([m for m in ('fastapi', 'uvicorn', 'math_verify', 'httpx') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
