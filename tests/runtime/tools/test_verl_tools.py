"""rlc's implementations of verl's own tools and interaction, against hand-worked replies and rewards; the search
tool against a retrieval service on loopback (Search-R1's protocol)."""

from __future__ import annotations

import asyncio
import importlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from rlc.tool_config import VERL_CLASSES
from rlc_runtime.tools.answer import Geo3kTool, Gsm8kTool
from rlc_runtime.tools.interaction import Gsm8kInteraction
from rlc_runtime.tools.search import SearchTool

SCHEMA = {"type": "function", "function": {"name": "t"}}


def test_every_substitute_exists() -> None:
    for target in VERL_CLASSES.values():
        module, _, name = target.rpartition(".")
        assert isinstance(getattr(importlib.import_module(module), name), type)


def submit(tool: Any, answers: list[Any], **create: Any) -> list[tuple[str, float]]:
    async def go() -> list[tuple[str, float]]:
        await tool.create("i", **create)
        replies = [await tool.execute("i", {"answer": a}) for a in answers]
        await tool.release("i")
        return [(text, step) for text, step, _ in replies]
    return asyncio.run(go())


def test_gsm8k_tool() -> None:
    # verl's text, `Current parsed {answer=} {reward=}`; a step reward of -0.05 when the score did not improve
    assert submit(Gsm8kTool({}, SCHEMA), ["70", "72", 72, "#### 72", "no idea"], ground_truth="72") == [
        ("Current parsed answer='70' reward=0.0", -0.05),
        ("Current parsed answer='72' reward=1.0", 0.0),
        ("Current parsed answer='72' reward=1.0", -0.05),  # an int argument is read as its text
        ("Current parsed answer='#### 72' reward=1.0", -0.05),
        ("Current parsed answer='no idea' reward=0", -0.05)]  # no number: verl's int 0
    # the ground truth as verl's agent loop passes it; numbers compare as numbers (rlc's rule)
    assert submit(Gsm8kTool({}, SCHEMA), ["1,000"], create_kwargs={"ground_truth": "1000"}) == [
        ("Current parsed answer='1,000' reward=1.0", 0.0)]
    assert submit(Gsm8kTool({}, SCHEMA), ["the total is 18 dollars"], ground_truth="18")[0][0].endswith("reward=1.0")


def test_geo3k_tool() -> None:
    replies = submit(Geo3kTool({}, SCHEMA), ["31", "\\boxed{30}", "30"], ground_truth="30")
    assert replies == [("Current parsed answer='31' reward=0.0", -0.05),
                       ("Current parsed answer='\\\\boxed{30}' reward=1.0", 0.0),
                       ("Current parsed answer='30' reward=1.0", -0.05)]
    assert submit(Geo3kTool({}, SCHEMA), ["\\frac{1}{2}"], create_kwargs={"ground_truth": "0.5"})[0][1] == 0.0
    assert submit(Geo3kTool({}, SCHEMA), ["2\\sqrt{3}"], ground_truth="\\sqrt{12}")[0][0].endswith("reward=1.0")


def test_gsm8k_interaction() -> None:
    async def talk(answer: str) -> tuple[bool, str, float, dict[str, Any]]:
        interaction = Gsm8kInteraction({})
        await interaction.start_interaction("i", name="gsm8k", query="?", ground_truth="72")
        messages = [{"role": "user", "content": "?"}, {"role": "assistant", "content": answer}]
        reply = await interaction.generate_response("i", messages, name="gsm8k", ground_truth="72")
        await interaction.finalize_interaction("i")
        return reply

    assert asyncio.run(talk("48 + 24 = 72\n#### 72")) == (True, "Your response is correct!", 1.0, {})
    retry = (False, "Your response is incorrect! You need to reflect on your answer and try again.", 0.0, {})
    assert asyncio.run(talk("#### 71")) == retry
    assert asyncio.run(talk("72")) == retry  # strict: the answer must follow `#### `


HITS = {
    "capital of france": [{"document": {"contents": "Paris\nParis is the capital of France."}, "score": 0.9},
                          {"document": {"contents": "France\nA country in Europe.\nIts capital is Paris."},
                           "score": 0.5}],
    "tallest mountain": [{"document": {"contents": "Everest"}, "score": 0.8}],
}


@pytest.fixture
def retrieval() -> Iterator[tuple[str, list[Any]]]:
    """A retrieval service as Search-R1's `retrieval_server.py` answers; `/busy` fails with 503 twice first,
    `/bad` answers 400. Every request body is recorded."""
    seen: list[Any] = []

    class Retrieve(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the http.server hook's name
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append(body)
            status = 400 if self.path == "/bad" else 503 if self.path == "/busy" and len(seen) <= 2 else 200
            found = [HITS.get(q, [])[: body["topk"]] for q in body["queries"]]
            reply = json.dumps({"result": found if any(found) else []}).encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Retrieve)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()


def search(url: str, parameters: dict[str, Any], **config: Any) -> tuple[str, float, dict[str, Any]]:
    tool = SearchTool({"retrieval_service_url": url, "retry_delay_s": 0.01} | config, SCHEMA)
    return asyncio.run(tool.execute("i", parameters))


def test_search_tool_formats_the_passages(retrieval: tuple[str, list[Any]]) -> None:
    url, seen = retrieval
    text, reward, metrics = search(f"{url}/retrieve", {"query_list": ["capital of france", "tallest mountain"]},
                                   topk=2)
    assert seen == [{"queries": ["capital of france", "tallest mountain"], "topk": 2, "return_scores": True}]
    assert json.loads(text) == {"result": "Doc 1 (Title: Paris)\nParis is the capital of France.\n\n"
                                          "Doc 2 (Title: France)\nA country in Europe.\nIts capital is Paris.\n"
                                          "---\nDoc 1 (Title: Everest)"}
    assert (reward, metrics) == (0.0, {"query_count": 2, "status": "success", "total_results": 3})
    assert json.loads(search(f"{url}/retrieve", {"query_list": ["nothing"]})[0]) == {
        "result": "No search results found."}
    assert json.loads(search(url, {"query_list": "not a list"})[0]) == {
        "result": "Error: 'query_list' is missing, empty, or not a list in parameters."}


def test_search_tool_retries_server_errors_only(retrieval: tuple[str, list[Any]]) -> None:
    url, seen = retrieval
    text, _, metrics = search(f"{url}/busy", {"query_list": ["tallest mountain"]})
    assert len(seen) == 3 and metrics["status"] == "success"  # two 503s, then the answer
    assert json.loads(text) == {"result": "Doc 1 (Title: Everest)"}
    seen.clear()
    text, _, metrics = search(f"{url}/bad", {"query_list": ["x"]})
    assert len(seen) == 1 and metrics["status"] == "api_error"
    assert json.loads(text) == {"result": "Search error: HTTP 400 Bad Request"}
    with pytest.raises(ValueError, match="retrieval_service_url"):
        SearchTool({}, SCHEMA)


def test_step_rewards_are_read_from_verls_result_tuple() -> None:
    from rlc_runtime.tools.base import step_reward

    assert step_reward(("Current parsed answer='7' reward=0.0", -0.05, {})) == -0.05
    assert step_reward(("text", 0, {})) == 0.0
    assert step_reward("plain text") is None and step_reward(("text", True, {})) is None
