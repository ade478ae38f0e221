"""Rule-based rewards chosen by a row's data source, in verl's signature: 1.0 for a right answer, else 0.0.

- GSM8K (`openai/gsm8k`, `gsm8k`): the number after `####`, verl's strict format (the format is part of the task);
  `gsm8k_score(..., method="flexible")` takes the last number instead. Numbers compare as numbers (72 == 72.0).
- Math (`lighteval/MATH`, `DigitalLearningGmbH/MATH-lighteval`, `HuggingFaceH4/MATH-500`, `math`, `math_dapo`,
  `aime*`, `numina_*`): math-verify compares the response's last `\\boxed{}` (or, without one, the last expression
  of its tail) with the gold answer symbolically, so `\\frac{1}{2}` matches 0.5. A gold answer math-verify cannot
  parse falls back to exact match.
- `exact_match`: normalised string equality (case, spacing and a final period ignored; a `\\boxed{}` unwrapped).
- Any other source: math-verify when the gold answer looks like mathematics (a digit, a LaTeX command or an
  operator), exact match otherwise. The check is on the text, not on whether it parses: math-verify parses a word
  like `Paris` as the product of five symbols, which would then match any other spelling of the same letters.
- Code contests (`codecontests`, `apps`, `codeforces`, `taco`): verl runs their test cases, on SandboxFusion when
  `sandbox_fusion.url` is set (the reward manager sends them there, `rewards.sandbox_fusion`), else locally with
  its unsandboxed `prime_code`. rlc has no unsandboxed executor, so here such a row raises ValueError naming the
  ways to score it, rather than being compared as text.
Rows in seed 003's format carry a `verification_info` JSON string as ground truth (`{"type": "math_verifiable",
"answer": {"value": "152"}}`); its type, when present, overrides the data source. A type these rules cannot score
(code, for instance) is a data error and raises ValueError; the model's output, however garbled, never raises.

math-verify bounds its parsing and comparison with SIGALRM, which only the main thread may set. On the main thread
it runs in-process with those timeouts. Off it (a thread pool, a threaded actor) each comparison goes to one helper
process that runs math-verify on its own main thread, and a sample it does not answer within a hard deadline is
scored 0 and the helper replaced: that also covers a computation the alarm cannot interrupt.
"""

from __future__ import annotations

import atexit
import json
import logging
import re
import select
import subprocess
import sys
import threading
from typing import Any

logger = logging.getLogger(__name__)

GSM8K_SOURCES = frozenset({"openai/gsm8k", "gsm8k"})
MATH_SOURCES = frozenset({"lighteval/MATH", "DigitalLearningGmbH/MATH-lighteval", "HuggingFaceH4/MATH-500", "math",
                          "math_dapo", "math_dapo_reasoning"})
MATH_PREFIXES = ("aime", "numina_")
CODE_SOURCES = frozenset({"codecontests", "apps", "codeforces", "taco"})  # verl's default_compute_score's list
VERIFICATION_TYPES = {"math_verifiable": "math", "exact_match": "exact"}
TIMEOUT_S = 5  # math-verify's own default, per parse and per comparison; SIGALRM takes whole seconds
GSM8K_TAIL = 300  # verl's clip: the answer is at the end, and regexes over a runaway response are slow
MATH_TAIL = 2000
_LOOKS_MATHEMATICAL = re.compile(r"[\d\\^_=+*/<>()\[\]{}]")
_NUMBER = re.compile(r"-?[\d.,]*\d")


def compute_score(data_source: str, solution_str: str, ground_truth: Any, extra_info: dict | None = None) -> float:
    """Score one response. `ground_truth`: the answer, a verification_info JSON string, or its parsed dict."""
    if data_source in CODE_SOURCES:
        raise ValueError(f"data source {data_source!r} is a code contest: its test cases must run, and the built-in "
                         "rules do not run code; set reward_model.sandbox_fusion.url (a SandboxFusion service, as "
                         "in verl), or serve a code_verifiable verifier with `rlc reward-server` and reward_api")
    kind, answer = parse_ground_truth(ground_truth)
    solution = solution_str if isinstance(solution_str, str) else ""
    kind = kind or source_kind(data_source, answer)
    if kind == "gsm8k":
        return gsm8k_score(solution, answer)
    if kind == "exact":
        return exact_match_score(solution, answer)
    return math_score(solution, answer)


def source_kind(data_source: str, answer: str) -> str:
    if data_source in GSM8K_SOURCES:
        return "gsm8k"
    if data_source == "exact_match":
        return "exact"
    if data_source in MATH_SOURCES or str(data_source).startswith(MATH_PREFIXES):
        return "math"
    return "math" if _LOOKS_MATHEMATICAL.search(answer) else "exact"


def parse_ground_truth(ground_truth: Any) -> tuple[str | None, str]:
    """(kind from a verification_info type, or None; the answer text)."""
    if isinstance(ground_truth, str) and ground_truth.lstrip().startswith("{"):
        try:
            ground_truth = json.loads(ground_truth)
        except ValueError:  # a set such as {1, 2} is an answer, not JSON
            return None, ground_truth
    if not isinstance(ground_truth, dict):
        return None, str(ground_truth)
    kind = ground_truth.get("type")
    if kind is not None and kind not in VERIFICATION_TYPES:
        raise ValueError(f"verification_info type {kind!r} cannot be scored by the built-in rules (they know "
                         f"{', '.join(VERIFICATION_TYPES)}): enable reward_api or set custom_reward_function")
    answer = ground_truth.get("answer", ground_truth)
    value = answer.get("value") if isinstance(answer, dict) else answer
    if value is None:
        raise ValueError(f"ground truth {json.dumps(ground_truth)[:200]} has no answer "
                         '(expected {"type": ..., "answer": {"value": ...}})')
    return VERIFICATION_TYPES.get(kind), str(value)


# GSM8K ---------------------------------------------------------------------------------------------------------
def extract_gsm8k_answer(solution: str, method: str = "strict") -> str | None:
    """The number after the last `####` (strict), or the last number of the text (flexible)."""
    tail = solution[-GSM8K_TAIL:]
    if method == "strict":
        found = re.findall(r"####\s*\$?\s*(-?[\d.,]*\d)", tail)
    elif method == "flexible":
        found = _NUMBER.findall(tail)
    else:
        raise ValueError(f"gsm8k method {method!r}: use 'strict' or 'flexible'")
    return found[-1].replace(",", "") if found else None


def gsm8k_score(solution: str, ground_truth: str, method: str = "strict", format_score: float = 0.0,
                score: float = 1.0) -> float:
    """`score` for the right number, `format_score` for a wrong one, 0 when no answer could be extracted."""
    found = extract_gsm8k_answer(solution, method)
    if found is None:
        return 0.0
    truth = ground_truth.split("####")[-1].strip().replace(",", "").lstrip("$")  # a full GSM8K answer works too
    return score if _same_number(found, truth) else format_score


def _same_number(a: str, b: str) -> bool:
    try:
        return float(a) == float(b)
    except ValueError:
        return a == b


# exact match ---------------------------------------------------------------------------------------------------
def exact_match_score(solution: str, answer: str) -> float:
    boxed = last_boxed_content(solution)
    return float(_normalise(boxed if boxed is not None else solution) == _normalise(answer))


def _normalise(text: str) -> str:
    return " ".join(text.lower().split()).strip(" .")


def last_boxed_content(text: str) -> str | None:
    """What the last `\\boxed{...}` (or `\\fbox{...}`) of `text` holds, braces balanced; None if there is none."""
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if start < 0:
        return None
    rest = text[start:].split("{", 1)
    if len(rest) < 2 or rest[0] not in ("\\boxed", "\\fbox", "\\boxed "):
        return None
    depth = 1
    for i, char in enumerate(rest[1]):
        depth += {"{": 1, "}": -1}.get(char, 0)
        if depth == 0:
            return rest[1][:i]
    return None


# math ----------------------------------------------------------------------------------------------------------
def math_score(solution: str, answer: str, timeout_s: int = TIMEOUT_S) -> float:
    """1.0 when math-verify finds the response's final answer equal to `answer`; see the module docstring."""
    boxed = last_boxed_content(solution)
    prediction = f"\\boxed{{{boxed}}}" if boxed is not None else solution[-MATH_TAIL:]
    if threading.current_thread() is threading.main_thread():
        return _math_verify(prediction, answer, timeout_s)
    return _helper.score(prediction, answer, timeout_s)


def _math_verify(prediction: str, answer: str, timeout_s: int) -> float:
    try:
        from math_verify import parse, verify

        gold = parse(answer if "\\boxed" in answer else f"\\boxed{{{answer}}}", parsing_timeout=timeout_s)
        if not any(not isinstance(item, str) for item in gold):
            return exact_match_score(prediction, answer)
        predicted = parse(prediction, parsing_timeout=timeout_s)
        return float(bool(predicted) and verify(gold, predicted, timeout_seconds=timeout_s))
    except Exception:  # noqa: BLE001 - whatever math-verify makes of a garbled response, it is not a right answer
        logger.debug("math-verify failed on a response; scored 0", exc_info=True)
        return 0.0


class _HelperProcess:
    """math-verify in a child process, one JSON request and one JSON score per line over its stdin/stdout.

    The child is started by file path, not by package name, so it works however this module was imported.
    One child serves all threads in turn (a lock around each exchange): math-verify is CPU-bound anyway.
    """

    def __init__(self) -> None:
        self.proc: subprocess.Popen[str] | None = None
        self.lock = threading.Lock()
        atexit.register(self.stop)

    def score(self, prediction: str, answer: str, timeout_s: int, deadline_s: float | None = None) -> float:
        # Inside the child each of parse(gold), parse(response) and verify stops at timeout_s by itself.
        deadline_s = 3 * timeout_s + 2 if deadline_s is None else deadline_s
        with self.lock:
            proc = self._running()
            try:
                proc.stdin.write(json.dumps([prediction, answer, timeout_s]) + "\n")  # type: ignore[union-attr]
                proc.stdin.flush()  # type: ignore[union-attr]
                ready, _, _ = select.select([proc.stdout], [], [], deadline_s)
                line = proc.stdout.readline() if ready else ""  # type: ignore[union-attr]
            except OSError:  # the child died under us
                line = ""
            if not line:
                logger.warning("math-verify gave no answer within %.1f s; scored 0 and restarted it", deadline_s)
                self.stop()
                return 0.0
            return float(json.loads(line))

    def _running(self) -> subprocess.Popen[str]:
        if self.proc is not None and self.proc.poll() is None:
            return self.proc
        child = ("import importlib.util, sys; spec = importlib.util.spec_from_file_location('rlc_reward_rules', "
                 "sys.argv[1]); module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module); "
                 "module.serve()")
        self.proc = subprocess.Popen([sys.executable, "-c", child, __file__], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, bufsize=1)
        ready, _, _ = select.select([self.proc.stdout], [], [], 120)
        if not ready or self.proc.stdout.readline().strip() != "ready":  # type: ignore[union-attr]
            self.stop()
            raise RuntimeError("the math-verify helper process did not start (its error is in the log above); "
                               "is math-verify installed (the runtime extra)?")
        return self.proc

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


def serve() -> None:
    """The helper process's loop; it ends when the parent closes the pipe (or dies)."""
    import math_verify  # noqa: F401 - loaded before "ready", so the first sample's deadline does not pay for it

    print("ready", flush=True)
    for line in sys.stdin:
        prediction, answer, timeout_s = json.loads(line)
        print(json.dumps(_math_verify(prediction, answer, timeout_s)), flush=True)


_helper = _HelperProcess()
