"""Interactions: a simulated user who answers the model's turn (verl's `BaseInteraction` shape).

`AnswerCheck` is verl's gsm8k interaction in miniature: it compares the model's last turn with
`interaction_kwargs.ground_truth` (from the row's `extra_info`) and, while it is wrong, says so and asks again;
a right answer ends the conversation. Config: `retry_message` (what the user says to a wrong answer).

`Gsm8kInteraction` is verl's `verl.interactions.gsm8k_interaction.Gsm8kInteraction`, which rlc runs in its place
(`rlc.tool_config.VERL_CLASSES`): the model's last turn is scored with GSM8K's strict rule (the number after
`#### `; rlc's rule, which compares numbers as numbers where verl compares strings) against the
`ground_truth` of `interaction_kwargs`; 1.0 ends the conversation with "Your response is correct!", anything else
asks the model to reflect and try again. The score is the turn's score (verl's `turn_scores`). One difference is
the agent loop's: verl appends the closing "Your response is correct!" to the response as a (masked) user turn
before it stops; rlc's loop stops without it, so the response ends with the model's answer.
"""

from __future__ import annotations

from typing import Any

from rlc_runtime.rewards.rules import gsm8k_score


class Interaction:
    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config

    async def start_interaction(self, instance_id: str, **kwargs: Any) -> None:
        return None

    async def generate_response(self, instance_id: str, messages: list[dict[str, Any]],
                                **kwargs: Any) -> tuple[bool, str, float, dict[str, Any]]:
        raise NotImplementedError

    async def finalize_interaction(self, instance_id: str) -> None:
        return None


class AnswerCheck(Interaction):
    async def generate_response(self, instance_id: str, messages: list[dict[str, Any]],
                                **kwargs: Any) -> tuple[bool, str, float, dict[str, Any]]:
        answer = next((m["content"] for m in reversed(messages) if m["role"] == "assistant"), "")
        right = answer.strip() == str(kwargs.get("ground_truth", "")).strip()
        if right:
            return True, "", 1.0, {}
        return False, str(self.config.get("retry_message", "That is not right. Try again.")), 0.0, {}


class Gsm8kInteraction(Interaction):
    CORRECT = "Your response is correct!"
    INCORRECT = "Your response is incorrect! You need to reflect on your answer and try again."

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self.truths: dict[str, Any] = {}

    async def start_interaction(self, instance_id: str, ground_truth: Any = None, **kwargs: Any) -> None:
        self.truths[instance_id] = ground_truth

    async def generate_response(self, instance_id: str, messages: list[dict[str, Any]],
                                **kwargs: Any) -> tuple[bool, str, float, dict[str, Any]]:
        answer = next((m.get("content") or "" for m in reversed(messages) if m.get("role") == "assistant"), "")
        truth = self.truths.get(instance_id)
        score = 0.0 if truth is None else gsm8k_score(answer, str(truth), method="strict")
        if score == 1.0:
            return True, self.CORRECT, score, {}
        return False, self.INCORRECT, score, {}

    async def finalize_interaction(self, instance_id: str) -> None:
        self.truths.pop(instance_id, None)
