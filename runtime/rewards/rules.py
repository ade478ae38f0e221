"""Rule-based rewards chosen by a row's data source (verl's default reward functions), 0 or 1 per response.

GSM8K answers are the number after `####` (verl's strict format) or, failing that, the last number in the text.
Math answers go through math-verify: the gold answer and the response's last `\\boxed{}` (or last expression) are
parsed and compared symbolically. Rows in seed 003's format carry a `verification_info` JSON string instead of a
ground truth; its `answer.value` is used the same way. Garbage never raises: it scores 0.
"""

from __future__ import annotations

import json
import re
import threading
from typing import Any

GSM8K_SOURCES = ("openai/gsm8k", "gsm8k")
NUMBER = re.compile(r"-?[\d,]*\.?\d+")


def compute_score(data_source: str, solution_str: str, ground_truth: Any, extra_info: dict | None = None) -> float:
    """verl's signature. `ground_truth` may be a string, a `{"value": ...}` dict, or a verification_info string."""
    kind, answer = _target(ground_truth)
    if kind == "exact_match" or data_source == "exact_match":
        return float(_normalise(solution_str) == _normalise(answer))
    if data_source in GSM8K_SOURCES:
        return gsm8k_score(solution_str, answer)
    return math_score(solution_str, answer)


def _target(ground_truth: Any) -> tuple[str, str]:
    """(kind, answer) from any of the accepted ground-truth forms."""
    if isinstance(ground_truth, str) and ground_truth.lstrip().startswith("{"):
        try:
            ground_truth = json.loads(ground_truth)
        except ValueError:
            return "math", ground_truth
    if isinstance(ground_truth, dict):
        answer = ground_truth.get("answer", ground_truth)
        value = answer.get("value") if isinstance(answer, dict) else answer
        kind = "exact_match" if ground_truth.get("type") == "exact_match" else "math"
        return kind, str(value)
    return "math", str(ground_truth)


def gsm8k_score(solution: str, answer: str) -> float:
    strict = re.search(r"####\s*(-?[\d,]*\.?\d+)", solution)
    numbers = NUMBER.findall(solution)
    found = strict.group(1) if strict else (numbers[-1] if numbers else None)
    return float(found is not None and _number(found) == _number(answer))


def math_score(solution: str, answer: str) -> float:
    try:
        from math_verify import parse, verify
    except ImportError:  # a light install: plain comparison of the last number
        numbers = NUMBER.findall(solution)
        return float(bool(numbers) and _number(numbers[-1]) == _number(answer))
    # math-verify's timeouts use SIGALRM, which only the main thread may set.
    timeout = 5 if threading.current_thread() is threading.main_thread() else None
    try:
        gold = parse(answer if "\\boxed" in answer or "$" in answer else f"${answer}$", parsing_timeout=timeout)
        predicted = parse(solution, parsing_timeout=timeout)
        return float(bool(gold) and bool(predicted) and verify(gold, predicted, timeout_seconds=timeout))
    except Exception:  # noqa: BLE001 - a response math-verify cannot handle is simply wrong
        return 0.0


def _number(text: str) -> float | None:
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return None


def _normalise(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower().rstrip(".")
