"""A calculator tool: `add` of two integers. Small on purpose: it is what the tool-learning task gives a model
that cannot add (examples/yaml/tool_sums.yaml), and a template for writing a tool."""

from __future__ import annotations

from typing import Any

from rlc_runtime.tools.base import Tool


class AddTool(Tool):
    async def execute(self, instance_id: str, parameters: dict[str, Any], **kwargs: Any) -> str:
        a, b = parameters.get("a"), parameters.get("b")
        if not all(isinstance(x, int) and not isinstance(x, bool) for x in (a, b)):
            return "Error: a and b must be integers"
        return f"{a} + {b} = {a + b}\n"
