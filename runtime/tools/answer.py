"""Answer-checking tools: the model submits its answer and the tool says whether it is right (verl's `Gsm8kTool`
and `Geo3kTool`, which rlc runs in their place when a tool file names `verl.tools.gsm8k_tool.Gsm8kTool` or
`verl.tools.geo3k_tool.Geo3kTool`; see `rlc.tool_config.VERL_CLASSES`).

Behaviour, as verl's: the tool is created with the row's `ground_truth` (from `tools_kwargs.<tool>.create_kwargs`,
given either as a keyword or, as verl's agent loop passes it, inside `create_kwargs=`); `execute` reads the `answer`
argument, scores it, and answers `Current parsed answer='...' reward=...` (Python's `{answer=} {reward=}`). Its
step reward (the tuple's second item) is 0.0 when the score improved on the instance's previous one, else -0.05.
verl's agent loop records step rewards but no reward function reads them; rlc's records them in the trajectory.

Where rlc differs, on purpose:
- GSM8K's score is rlc's gsm8k rule (`rlc_runtime.rewards.rules.gsm8k_score`, flexible: the last number, with
  `#### ` put in front as verl does), which compares numbers as numbers (`72.0` is `72`, `1,000` is `1000`);
  verl compares the strings.
- Geo3K's score is rlc's math rule (math-verify on the answer, `\\boxed{}` or not) where verl uses mathruler's
  `grade_answer`; both compare symbolically. verl's `Geo3kTool.create` reads `ground_truth` only as a keyword,
  so in verl's own agent loop (which passes `create_kwargs=`) it scores against None; rlc reads both forms.
- verl makes one instance per call, so its penalty compares with 0; rlc's instance lives for the whole
  conversation (created before the first turn, released after the last), so a resubmitted answer that is no
  better is penalised, as the tool's comment intends.
"""

from __future__ import annotations

from typing import Any

from rlc_runtime.rewards.rules import extract_gsm8k_answer, gsm8k_score, math_score
from rlc_runtime.tools.base import Tool

NO_IMPROVEMENT_PENALTY = -0.05


class AnswerTool(Tool):
    """Keeps each instance's ground truth and best score; subclasses say how an answer is scored."""

    def __init__(self, config: dict[str, Any], tool_schema: dict[str, Any]) -> None:
        super().__init__(config, tool_schema)
        self.instances: dict[str, dict[str, Any]] = {}

    async def create(self, instance_id: str, ground_truth: Any = None, **kwargs: Any) -> None:
        if ground_truth is None:
            ground_truth = (kwargs.get("create_kwargs") or {}).get("ground_truth")
        self.instances[instance_id] = {"ground_truth": ground_truth, "reward": 0.0}

    async def execute(self, instance_id: str, parameters: dict[str, Any],
                      **kwargs: Any) -> tuple[str, float, dict[str, Any]]:
        answer = parameters.get("answer", "")
        answer = answer if isinstance(answer, str) else str(answer)
        state = self.instances[instance_id]
        reward = self.score(answer, state["ground_truth"])
        step_reward = 0.0 if reward > state["reward"] else NO_IMPROVEMENT_PENALTY
        state["reward"] = reward
        return f"Current parsed {answer=} {reward=}", step_reward, {}

    async def release(self, instance_id: str) -> None:
        self.instances.pop(instance_id, None)

    def score(self, answer: str, ground_truth: Any) -> float | int:
        raise NotImplementedError


class Gsm8kTool(AnswerTool):
    def score(self, answer: str, ground_truth: Any) -> float | int:
        response = answer if answer.startswith("#### ") else "#### " + answer
        if ground_truth is None or extract_gsm8k_answer(response, "flexible") is None:
            return 0  # verl's int 0 for "no number found", so the reply reads `reward=0` as verl's does
        return gsm8k_score(response, str(ground_truth), method="flexible")


class Geo3kTool(AnswerTool):
    def score(self, answer: str, ground_truth: Any) -> float | int:
        if ground_truth is None:
            return 0.0
        # The argument is the answer itself (verl's use_boxed=False): box it, so LaTeX without `$` is read as LaTeX.
        boxed = answer if "\\boxed" in answer else f"\\boxed{{{answer}}}"
        return math_score(boxed, str(ground_truth))
