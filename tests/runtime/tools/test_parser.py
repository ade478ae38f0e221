"""Hermes tool calls read from hostile model output: right calls, readable errors, linear time."""

from __future__ import annotations

import time

from rlc_runtime.tools.parser import MAX_CALLS, ToolCall, parse_hermes


def test_calls_in_order_with_arguments() -> None:
    text = ('I will add. <tool_call>{"name": "add", "arguments": {"a": 2, "b": 3}}</tool_call> and '
            '<tool_call>{"name": "run_python", "arguments": "{\\"code\\": \\"print(1)\\"}"}</tool_call>')
    assert parse_hermes(text) == [ToolCall("add", {"a": 2, "b": 3}), ToolCall("run_python", {"code": "print(1)"})]


def test_no_call_is_no_call() -> None:
    assert parse_hermes("68") == [] and parse_hermes("</tool_call>{}") == []


def test_broken_calls_become_errors_the_model_can_read() -> None:
    not_json, no_name, unclosed = parse_hermes("<tool_call>{add(2, 3)}</tool_call><tool_call>[1]</tool_call>"
                                               '<tool_call>{"name": "add"')
    assert not_json.error.startswith("the tool call is not JSON") and not_json.name == ""
    assert no_name.error == 'a tool call is a JSON object {"name": ..., "arguments": {...}}'
    assert unclosed.error == "a <tool_call> without its closing </tool_call>"
    [bad_args] = parse_hermes('<tool_call>{"name": "add", "arguments": [2, 3]}</tool_call>')
    assert bad_args == ToolCall("add", error="the tool call's arguments are not a JSON object")


def test_hostile_text_is_read_in_linear_time() -> None:
    # Quadratic scanning (a lazy regex retried from every opening tag) takes minutes on these; a linear scan ms.
    openings = "<tool_call>" * 200_000
    started = time.perf_counter()
    assert parse_hermes(openings) == [ToolCall("", error="a <tool_call> without its closing </tool_call>")]
    many = '<tool_call>{"name": "x"}</tool_call>' * 100_000
    assert len(parse_hermes(many)) == MAX_CALLS
    deep = "<tool_call>" + "[" * 100_000 + "</tool_call>"
    assert parse_hermes(deep)[0].error is not None
    assert time.perf_counter() - started < 2.0
