"""rlc's reward server scores the rl_verifier parity corpus exactly as rl_verifier itself did.

The reference is `data/rl_verifier_scores.json`: the scores that II-Thought's rl_verifier (at the commit the file
names) gave each sample of `data/rl_verifier_corpus.jsonl`, recorded by `bench/rl_verifier_parity.py --record`
from a real rl_verifier server. It is independent of rlc's code (CI cannot fetch rl_verifier, so its verdicts
travel as data). math-verify's LaTeX parser behaves differently on antlr4 4.9.3 (which hydra-core pins) and
4.13.2 (what rl_verifier's requirements install), so the file holds rl_verifier's scores under each, and this
test holds rlc to the ones made with the parser installed here. The corpus covers math_verifiable,
swe_verifiable and llm_judge (through a loopback judge that answers from a table, a test double: no model runs
here), each with the format reward off and on.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[3] / "bench" / "rl_verifier_parity.py"
_spec = importlib.util.spec_from_file_location("rl_verifier_parity", BENCH)
parity = sys.modules[_spec.name] = importlib.util.module_from_spec(_spec)  # a dataclass needs it registered
_spec.loader.exec_module(parity)


@pytest.fixture(scope="module")
def judge():
    with parity.LoopbackJudge() as judge:
        yield judge


@pytest.fixture(scope="module")
def reference() -> dict[str, dict[str, float]]:
    recorded = json.loads(parity.RECORD.read_text("utf-8"))
    assert len(recorded["rl_verifier"]["commit"]) == 40
    antlr = version(parity.ANTLR)
    assert antlr in recorded["scores_by_antlr4"], (
        f"no rl_verifier scores recorded for antlr4 {antlr}: run bench/rl_verifier_parity.py --record with it")
    return recorded["scores_by_antlr4"][antlr]


def test_the_corpus_is_the_one_the_cases_describe():
    assert parity.load_corpus() == parity.build_corpus()


@pytest.mark.parametrize("mode", list(parity.MODES))
def test_rlc_scores_the_corpus_as_rl_verifier_did(judge, reference, mode):
    samples = parity.load_corpus()
    with parity.rlc_server(judge.url, parity.MODES[mode]) as url:
        ours = parity.score_corpus(url, samples)
    theirs = reference[mode]
    assert set(theirs) == set(ours)
    differ = {i: (theirs[i], ours[i]) for i in theirs if theirs[i] != ours[i]}
    assert not differ, f"rl_verifier vs rlc: {differ}"
    # The corpus is not trivial: it holds right, wrong and partial answers, and the format reward moves them.
    assert {0.0, 1.0} <= set(theirs.values()) and any(0.0 < s < 1.0 for s in theirs.values())
