"""What a tool and an interaction are, and how the declared classes are loaded.

The shapes follow verl's `BaseTool` and `BaseInteraction`, so a tool written for verl's agent loop runs here:
a tool is built as `cls(config, tool_schema)` and has async `create(instance_id, **kwargs)`,
`execute(instance_id, parameters, **kwargs)` and `release(instance_id)`; `execute` returns text, or an object with
a `text` attribute (verl's `ToolResponse`), or a tuple whose first item is one of those (verl's
`(response, reward, metrics)`). An interaction is built as `cls(config)` and has async
`start_interaction(instance_id, **kwargs)`, `generate_response(instance_id, messages, **kwargs)` returning
`(should_terminate, reply, score, metadata)`, and `finalize_interaction(instance_id)`.
"""

from __future__ import annotations

import importlib
from typing import Any

from rlc.tool_config import InteractionSpec, ToolSpec


class Tool:
    """A base to subclass: the instance bookkeeping is optional, `execute` is the tool."""

    def __init__(self, config: dict[str, Any], tool_schema: dict[str, Any]) -> None:
        self.config, self.tool_schema = config, tool_schema
        self.name = tool_schema["function"]["name"]

    async def create(self, instance_id: str, **kwargs: Any) -> None:
        return None

    async def execute(self, instance_id: str, parameters: dict[str, Any], **kwargs: Any) -> Any:
        raise NotImplementedError

    async def release(self, instance_id: str) -> None:
        return None


def load_class(class_name: str) -> Any:
    module, _, name = class_name.rpartition(".")
    return getattr(importlib.import_module(module), name)


def build_tools(specs: list[ToolSpec]) -> dict[str, Any]:
    return {spec.name: load_class(spec.class_name)(spec.config, spec.schema) for spec in specs}


def build_interactions(specs: list[InteractionSpec]) -> dict[str, Any]:
    return {spec.name: load_class(spec.class_name)(spec.config) for spec in specs}


def response_text(result: Any) -> str:
    """The text of whatever a tool's `execute` returned (see the module docstring)."""
    if isinstance(result, tuple) and result:
        result = result[0]
    text = getattr(result, "text", result)
    return text if isinstance(text, str) else str(text)


def step_reward(result: Any) -> float | None:
    """The step reward of a verl-style `(response, reward, metrics)` result, or None when there is none."""
    if isinstance(result, tuple) and len(result) > 1 and isinstance(result[1], int | float) \
            and not isinstance(result[1], bool):
        return float(result[1])
    return None
