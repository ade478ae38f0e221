"""Tool calls in a model's output, hermes format (Qwen's and NousResearch's): `<tool_call>{json}</tool_call>`.

Model outputs are hostile input: the scan uses `str.find` from left to right (each character is looked at a
bounded number of times, so no text makes it backtrack), a call's JSON is parsed only when it is short, and a
call that does not parse is reported as an error for the model to see rather than dropped silently.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from typing import Any

START, END = "<tool_call>", "</tool_call>"
MAX_CALL_CHARS = 16_384
MAX_CALLS = 64


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)
    error: str | None = None  # set when the call could not be read; `name` may then be ""


def parse_hermes(text: str) -> list[ToolCall]:
    calls: list[ToolCall] = []
    position = 0
    while len(calls) < MAX_CALLS:
        start = text.find(START, position)
        if start < 0:
            break
        end = text.find(END, start + len(START))
        if end < 0:
            calls.append(ToolCall("", error="a <tool_call> without its closing </tool_call>"))
            break
        calls.append(_read_call(text[start + len(START): end]))
        position = end + len(END)
    return calls


def _read_call(body: str) -> ToolCall:
    if len(body) > MAX_CALL_CHARS:
        return ToolCall("", error=f"a tool call of {len(body)} characters (at most {MAX_CALL_CHARS})")
    try:
        call = json.loads(body)
    except (ValueError, RecursionError) as error:
        return ToolCall("", error=f"the tool call is not JSON: {error}")
    if not isinstance(call, dict) or not isinstance(call.get("name"), str):
        return ToolCall("", error='a tool call is a JSON object {"name": ..., "arguments": {...}}')
    arguments = call.get("arguments", {})
    if isinstance(arguments, str):  # some models write the arguments as a JSON string
        with contextlib.suppress(ValueError, RecursionError):
            arguments = json.loads(arguments)
    if not isinstance(arguments, dict):
        return ToolCall(call["name"], error="the tool call's arguments are not a JSON object")
    return ToolCall(call["name"], arguments)
