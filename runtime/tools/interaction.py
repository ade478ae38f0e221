"""Interactions: a simulated user who answers the model's turn (verl's `BaseInteraction` shape).

`AnswerCheck` is verl's gsm8k interaction in miniature: it compares the model's last turn with
`interaction_kwargs.ground_truth` (from the row's `extra_info`) and, while it is wrong, says so and asks again;
a right answer ends the conversation. Config: `retry_message` (what the user says to a wrong answer).
"""

from __future__ import annotations

from typing import Any


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
