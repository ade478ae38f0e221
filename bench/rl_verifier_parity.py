"""rl_verifier parity: II-Thought's rl_verifier and `rlc reward-server`, side by side on one corpus, must agree.

Both servers run for real on 127.0.0.1, twice: with the format reward off and on (rl_verifier's
USE_FORMAT_VERIFIER, rlc's --format-reward). The corpus (`tests/rlc/reward_server/data/rl_verifier_corpus.jsonl`,
written by `--write-corpus` from the cases below) covers every type both servers score: math_verifiable,
swe_verifiable and llm_judge, each in several output formats (R1-style, no end token, CJK, the assistant tag).
code_verifiable is left out: rl_verifier runs code only through a Sandbox Fusion service (Docker), which cannot
run here; multiple choice and the string types are rlc's own. llm_judge needs a model: a loopback judge answers
each prompt with the reply the corpus assigns to its reference answer (case, quotes and whitespace variants), so
what is compared is the prompt and the verdict rule, not a model.

    git --git-dir=<ii-thought mirror> archive HEAD | tar -x -C /tmp/ii
    python3 -m venv /tmp/rlv && /tmp/rlv/bin/pip install -r /tmp/ii/rl_verifier/requirements.txt
    python bench/rl_verifier_parity.py --rl-verifier /tmp/ii/rl_verifier --python /tmp/rlv/bin/python \
        --commit <sha> [--record]

Prints the agreement per type and mode, lists every disagreement, exits 1 on any. `--record` writes
rl_verifier's scores, with its commit, to `rl_verifier_scores.json` beside the corpus: the reference that
`tests/rlc/reward_server/test_rl_verifier_parity.py` holds rlc's server to in CI, where rl_verifier cannot be
fetched.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from rlc.reward_server.process import ServerProcess, free_port

DATA = Path(__file__).resolve().parents[1] / "tests" / "rlc" / "reward_server" / "data"
CORPUS = DATA / "rl_verifier_corpus.jsonl"
RECORD = DATA / "rl_verifier_scores.json"
JUDGE_MODEL = "parity-judge"
EOS = "<｜end▁of▁sentence｜>"
MODES = {"format_off": False, "format_on": True}
ANTLR = "antlr4-python3-runtime"

WRAPPERS = {  # how the answer sits in the model's output; the format reward reads these
    "plain": "{body}",
    "r1": "<think>\nLet me work it out.\n</think>\n{body}" + EOS,
    "no_eos": "<think>Let me work it out.</think>{body}",
    "cjk": "<think>让我想想。</think>{body}" + EOS,
    "after_tag": "User: solve it.<｜Assistant｜><think>ok</think> {body}" + EOS,
    "think_before_tag": "<think>ok</think><｜Assistant｜>{body}" + EOS,  # the tag split drops the think block
}
MATH = [  # (answer part of the output, answer.value)
    ("The answer is \\boxed{152}.", "152"), ("\\boxed{150}", "152"), ("So \\boxed{\\frac{1}{2}}", "0.5"),
    ("\\boxed{\\dfrac12}", "\\frac{1}{2}"), ("\\boxed{1/3}", "\\frac{1}{2}"), ("The answer is 152.", "152"),
    ("\\boxed{152", "152"), ("first \\boxed{1} then \\boxed{2}", "2"), ("\\boxed{x^2 + 2x + 1}", "(x+1)^2"),
    ("\\boxed{\\sqrt{2}}", "\\sqrt{2}"), ("\\boxed{3.14}", "\\pi"), ("\\boxed{50\\%}", "50"),
    ("\\boxed{[1, 3)}", "[1,3)"), ("\\boxed{\\{1, 2\\}}", "\\{2, 1\\}"), ("\\boxed{-7}", -7), ("\\boxed{2.5}", 2.5),
    ("\\boxed{\\text{Paris}}", "Paris"), ("\\boxed{x = 5}", "5"), ("\\boxed{ }", "0"), ("\\boxed 5", "5"),
    ("\\boxed{{a}{b}}", "ab"), ("The values are \\boxed{2} and \\boxed{3}", "2, 3"), ("\\boxed{10^{3}}", "1000"),
    ("\\boxed{\\infty}", "\\infty"), ("answer" + " " * 300 + "\\boxed{7}", "7"),
    ("```python\nprint(1)\n```\nso \\boxed{1}", "1"),
]
SWE_INPUT = "def area(r):\n    return 3.14 * r * r\n\n\ndef perimeter(r):\n    return 2 * 3.14 * r\n"
SWE_TRUTH = ("import math\n\n\ndef area(r):\n    return math.pi * r * r\n\n\ndef perimeter(r):\n"
             "    return 2 * math.pi * r\n")
SWE_HALF = "def area(r):\n    return math.pi * r * r\n\n\ndef perimeter(r):\n    return 2 * 3.14 * r\n"
SWE = [  # (answer part of the output, answer.input, answer.ground_truth)
    (f"```python\n{SWE_TRUTH}```", SWE_INPUT, SWE_TRUTH), (f"```python\n{SWE_HALF}```", SWE_INPUT, SWE_TRUTH),
    (f"```python\n{SWE_INPUT}```", SWE_INPUT, SWE_TRUTH), (SWE_TRUTH, SWE_INPUT, SWE_TRUTH),
    (f"```\n{SWE_TRUTH}```", SWE_INPUT, SWE_TRUTH), (f"```c++\n{SWE_HALF}```", SWE_INPUT, SWE_TRUTH),
    (f"```pý\n{SWE_HALF}```", SWE_INPUT, SWE_TRUTH),
    (f"```py\n{SWE_TRUTH}```\n```py\nx = 1\n```", SWE_INPUT, SWE_TRUTH),
    ("```python\n```", SWE_INPUT, SWE_TRUTH), ("```python\nprint('hello')\n```", SWE_INPUT, SWE_TRUTH),
    (f"```python\n\n  {SWE_TRUTH}  \n\n```", f"\n{SWE_INPUT}\n", f"  {SWE_TRUTH}\n"),
    (f"```python\n{SWE_TRUTH}", SWE_INPUT, SWE_TRUTH), (f"```python\n{SWE_HALF}```", SWE_INPUT, SWE_INPUT),
]
JUDGE_REPLIES = {  # reference answer -> what the judge says about it
    "ref-true": "True", "ref-lower": "true", "ref-quoted": '"True"', "ref-leading-space": " True",
    "ref-newline": "True\n", "ref-false": "False", "ref-upper": "TRUE", "ref-single-quoted": "'True'",
    "ref-period": "True.", "ref-empty": "",
}


def build_corpus() -> list[dict[str, str]]:
    """Every case in every wrapper that bears on it: (id, llm_output, verification_info)."""
    samples = []

    def add(name: str, body: str, info: dict[str, Any], wrappers: list[str]) -> None:
        for wrapper in wrappers:
            samples.append({"id": f"{name}/{wrapper}", "llm_output": WRAPPERS[wrapper].format(body=body),
                            "verification_info": json.dumps(info, ensure_ascii=False)})

    for i, (body, value) in enumerate(MATH):
        add(f"math/{i}", body, {"type": "math_verifiable", "answer": {"value": value}}, list(WRAPPERS))
    for i, (body, original, truth) in enumerate(SWE):
        add(f"swe/{i}", body, {"type": "swe_verifiable", "answer": {"input": original, "ground_truth": truth}},
            ["plain", "r1", "cjk", "after_tag"])
    for reference in JUDGE_REPLIES:
        add(f"judge/{reference}", f"I believe it is {reference}.",
            {"type": "llm_judge", "answer": {"value": reference}}, ["plain", "r1"])
    return samples


class LoopbackJudge(ThreadingHTTPServer):
    """An OpenAI-compatible endpoint on 127.0.0.1 (a test double: no model runs here) that lists one model and
    answers each chat request with `JUDGE_REPLIES[<the prompt's reference answer>]`."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _JudgeHandler)
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def __enter__(self) -> LoopbackJudge:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()


class _JudgeHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        self._reply({"object": "list", "data": [{"id": JUDGE_MODEL, "object": "model", "owned_by": "parity"}]})

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        prompt = body["messages"][0]["content"]
        reference = re.search(r"<Reference Answer>\n(.*)\n</Reference Answer>", prompt, re.DOTALL).group(1)
        self._reply({"id": "x", "object": "chat.completion", "created": 0, "model": JUDGE_MODEL,
                     "choices": [{"index": 0, "finish_reason": "stop",
                                  "message": {"role": "assistant", "content": JUDGE_REPLIES[reference]}}],
                     "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})

    def _reply(self, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


def load_corpus() -> list[dict[str, str]]:
    return [json.loads(line) for line in CORPUS.read_text(encoding="utf-8").splitlines()]


def score_corpus(url: str, samples: list[dict[str, str]], workers: int = 8) -> dict[str, float]:
    """Each sample's score from the server at `url`; a sample it refuses raises, naming the sample."""
    with httpx.Client(base_url=url, timeout=120) as client:
        def one(sample: dict[str, str]) -> float:
            response = client.post("/reward", json={"llm_output": sample["llm_output"],
                                                    "verification_info": sample["verification_info"]})
            if response.status_code != 200:
                raise RuntimeError(f"{url} answered {sample['id']} with {response.status_code}: {response.text}")
            return response.json()["score"]

        with ThreadPoolExecutor(workers) as pool:
            return dict(zip((s["id"] for s in samples), pool.map(one, samples), strict=True))


@contextmanager
def rlc_server(judge_url: str, format_reward: bool):
    with ServerProcess(judge_url=judge_url, judge_model=JUDGE_MODEL, format_reward=format_reward) as server:
        yield server.url


@contextmanager
def rl_verifier_server(root: Path, python: str, judge_url: str, format_reward: bool):
    port = free_port()
    env = {**os.environ, "USE_FORMAT_VERIFIER": str(format_reward).lower(), "LLM_JUDGE_MODEL": JUDGE_MODEL,
           "LLM_JUDGE_BASE_URL": judge_url, "LLM_JUDGE_API_KEY": "EMPTY", "PYTHONPATH": ""}
    proc = subprocess.Popen([python, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1", "--port", str(port),
                             "--log-level", "warning"], cwd=root / "src", env=env, stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/ping", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("rl_verifier did not start") from None
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def compare(samples: list[dict[str, str]], theirs: dict[str, float], ours: dict[str, float], mode: str) -> int:
    kinds = Counter(s["id"].split("/")[0] for s in samples)
    bad = [s["id"] for s in samples if theirs[s["id"]] != ours[s["id"]]]
    for kind, total in sorted(kinds.items()):
        wrong = sum(1 for i in bad if i.startswith(kind + "/"))
        print(f"{mode:10s} {kind:6s} agree on {total - wrong}/{total}")
    for i in bad:
        print(f"  DIFFER {mode} {i}: rl_verifier {theirs[i]!r}, rlc {ours[i]!r}")
    return len(bad)


def _version_in(python: str, package: str) -> str:
    code = f"from importlib.metadata import version; print(version({package!r}))"
    return subprocess.run([python, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def record(args: argparse.Namespace, antlr: str, scores: dict[str, dict[str, float]]) -> None:
    """Add rl_verifier's scores under its parser's antlr version (the parser decides some LaTeX verdicts)."""
    previous = json.loads(RECORD.read_text("utf-8")) if RECORD.exists() else {}
    by_parser = previous.get("scores_by_antlr4", {}) if previous.get("rl_verifier", {}).get("commit") == args.commit \
        else {}
    by_parser[antlr] = scores
    RECORD.write_text(json.dumps({
        "rl_verifier": {"repository": "Intelligent-Internet/ii-thought", "path": "rl_verifier", "commit": args.commit},
        "math_verify": _version_in(args.python, "math-verify"), "recorded_by": "bench/rl_verifier_parity.py --record",
        "scores_by_antlr4": by_parser}, indent=1, ensure_ascii=False) + "\n", "utf-8")
    print(f"recorded rl_verifier's scores (antlr4 {antlr}) in {RECORD}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rl-verifier", type=Path, help="ii-thought's rl_verifier directory")
    parser.add_argument("--python", default=sys.executable, help="the interpreter rl_verifier is installed in")
    parser.add_argument("--commit", default="unknown", help="the ii-thought commit the directory was taken from")
    parser.add_argument("--record", action="store_true", help="write rl_verifier's scores as the CI reference")
    parser.add_argument("--write-corpus", action="store_true", help="rewrite the corpus from the cases here")
    args = parser.parse_args()
    if args.write_corpus:
        CORPUS.write_text("".join(json.dumps(s, ensure_ascii=False) + "\n" for s in build_corpus()), "utf-8")
        print(f"wrote {CORPUS}")
    if args.rl_verifier is None:
        return 0
    samples, differ, recorded = load_corpus(), 0, {}
    theirs_antlr, ours_antlr = _version_in(args.python, ANTLR), _version_in(sys.executable, ANTLR)
    print(f"math-verify's LaTeX parser: antlr4 {theirs_antlr} for rl_verifier, {ours_antlr} for rlc")
    if theirs_antlr != ours_antlr:
        print("  (different parsers: answers that only one of them parses, such as 50\\%, will differ)")
    with LoopbackJudge() as judge:
        for mode, format_reward in MODES.items():
            with rl_verifier_server(args.rl_verifier, args.python, judge.url, format_reward) as url:
                theirs = score_corpus(url, samples)
            with rlc_server(judge.url, format_reward) as url:
                ours = score_corpus(url, samples)
            differ += compare(samples, theirs, ours, mode)
            recorded[mode] = theirs
    print(f"{len(samples)} samples x {len(MODES)} modes: {'all equal' if not differ else f'{differ} differ'}")
    if args.record:
        record(args, theirs_antlr, recorded)
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
