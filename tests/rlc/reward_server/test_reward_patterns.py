"""Every pattern the verifiers apply to model output is linear-time, and finds what the reference's backtracking
Python regex finds: each RE2 pattern or str.find scan is checked against the reference pattern itself, run by
Python's `re`, on generated strings built from the characters that matter (fences, tags, Unicode spaces and
letters), and each is timed on the crafted outputs that made the references take seconds."""

from __future__ import annotations

import re
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rlc.reward_server.verifiers.extract import has_code_block, has_think_block, python_code
from rlc.reward_server.verifiers.strings import choice
from rlc.reward_server.verifiers.swe import last_tagged_block

# The references, as rl_verifier, Sandbox Fusion and rlc before RE2 wrote them.
STATED_CHOICE = re.compile(r"answer\s*(?:is|:)?\s*:?\s*\(?([A-Za-z])\)?(?![A-Za-z])", re.IGNORECASE)
SANDBOX_FUSION_FENCE = re.compile(r"```([^\n]*)\n(.*?)\n\s*```", re.DOTALL)
SWE_FENCE = re.compile(r"```([\w#+]+)\n(.*?)```", re.DOTALL)
PYTHON_ALIASES = {"python", "Python", "py", "Python3", "python3", "PY"}

PIECES = ["```", "```python\n", "```py\n", "```c++\n", "```pý\n", "```ß_2\n", "\n", " ", "\t", "\u3000", "\x85",
          "\xa0", "\x0b", "\x1f", "answer", "ANSWER is", ":", "(", ")", "B", "c", "x", "é", "1", "٣", "<think>",
          "</think>", "#", "+"]
texts = st.lists(st.sampled_from(PIECES), max_size=24).map("".join)


def reference_python_code(text: str) -> str | None:
    for info, code in SANDBOX_FUSION_FENCE.findall(text):
        if info.strip() in PYTHON_ALIASES:
            return code
    return None


def reference_choice_stated(text: str) -> str | None:
    found = STATED_CHOICE.findall(text)
    return found[-1].upper() if found else None


def reference_swe_block(text: str) -> str | None:
    found = SWE_FENCE.findall(text)
    return found[-1][1].strip() if found else None


@settings(max_examples=400, deadline=None)
@given(texts)
def test_linear_patterns_find_what_the_references_find(text):
    assert python_code(text) == reference_python_code(text)
    assert last_tagged_block(text) == reference_swe_block(text)
    assert has_code_block(text, "python") == (re.search(r"```python\n(.*?)```", text, re.DOTALL) is not None)
    assert has_think_block(text) == (re.search(r"<think>.*?</think>", text, re.DOTALL) is not None)
    if "\\boxed" not in text:  # choice() reads a box first; the stated form is what the old regex found
        stated = reference_choice_stated(text)
        if stated is not None:
            assert choice(text) == stated


@pytest.mark.parametrize(("name", "scan", "bait"), [
    ("multiple choice", choice, "answer" + " " * 200_000),  # cubic before: 2,000 spaces took 43 s
    ("fenced code", python_code, "```python\n" * 50_000),
    ("swe fence", last_tagged_block, "```py\n" * 50_000),
    ("swe tag", last_tagged_block, ("```" + "a" * 1000) * 200),
    ("swe backticks", last_tagged_block, "`" * 200_000 + "py\n"),
    ("code gate", lambda t: has_code_block(t, "python"), "```python\n" * 50_000),
    ("think", has_think_block, "<think>" * 50_000),
])
def test_crafted_outputs_take_linear_time(name, scan, bait):
    start = time.perf_counter()
    scan(bait)
    assert time.perf_counter() - start < 1.0, name  # each is a few ms; the references take minutes here
