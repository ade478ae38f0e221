"""A retrieval tool: the model's queries go to a retrieval service over HTTP, and the passages come back (verl's
`verl.tools.search_tool.SearchTool`, the Search-R1 tool, which rlc runs in its place; see
`rlc.tool_config.VERL_CLASSES`).

The service's protocol (Search-R1's `retrieval_server.py`): POST `{"queries": [...], "topk": k, "return_scores":
true}` to `retrieval_service_url`; it answers `{"result": [[{"document": {"contents": "Title\\ntext"}, "score": s},
...], ...]}`, one list per query. The tool answers with a JSON string `{"result": ...}` of the passages, each
`Doc i (Title: ...)\\ntext`, the queries' blocks joined by `\\n---\\n` (verl's text, character for character), or
`{"result": "Search error: ..."}` when the service failed, which the model reads.

Config (verl's keys): `retrieval_service_url` (required), `topk` (3), `timeout` (seconds per request, 30),
`rate_limit` (concurrent requests, 120), `enable_global_rate_limit` (true). verl retries a 500/502/503/504, a
refused connection and a timeout up to 10 times with a delay of 1, 2, 3, ... s, and gives up at once on any other
error; so does rlc. Differences: verl's limit is global (a named Ray actor shared by every rollout worker), rlc's
is per rollout process; `num_workers` (verl's thread pool) is not needed, the requests run in asyncio's threads.
Give the call room for the retries with the tool's `call_timeout_s` (rlc's, 30 s by default).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.error
import urllib.request
from typing import Any

from rlc_runtime.tools.base import Tool

MAX_RETRIES = 10
RETRY_STATUS = {500, 502, 503, 504}
MAX_BYTES = 16 << 20


class SearchTool(Tool):
    def __init__(self, config: dict[str, Any], tool_schema: dict[str, Any]) -> None:
        super().__init__(config, tool_schema)
        self.url = str(config.get("retrieval_service_url") or "")
        if not self.url:
            raise ValueError("SearchTool's config needs retrieval_service_url (the retrieval service's URL)")
        self.topk = int(config.get("topk", 3))
        self.timeout = float(config.get("timeout", 30))
        self.retry_delay_s = float(config.get("retry_delay_s", 1.0))  # verl's 1 s; tests shorten it
        limited = bool(config.get("enable_global_rate_limit", True))
        self.slots = threading.BoundedSemaphore(int(config.get("rate_limit", 120))) if limited else None

    async def execute(self, instance_id: str, parameters: dict[str, Any],
                      **kwargs: Any) -> tuple[str, float, dict[str, Any]]:
        queries = parameters.get("query_list")
        if not queries or not isinstance(queries, list):
            return _result("Error: 'query_list' is missing, empty, or not a list in parameters."), 0.0, {}
        text, metrics = await asyncio.to_thread(self.search, [str(q) for q in queries])
        return text, 0.0, metrics

    def search(self, queries: list[str]) -> tuple[str, dict[str, Any]]:
        """The tool's answer to `queries` and its metrics (query_count, status, total_results)."""
        if self.slots is None:
            reply, error = self._call(queries)
        else:
            with self.slots:
                reply, error = self._call(queries)
        metrics: dict[str, Any] = {"query_count": len(queries), "status": "api_error", "total_results": 0}
        if error is not None:
            return _result(f"Search error: {error}"), metrics
        results = reply.get("result") if isinstance(reply, dict) else None
        if not results:
            return _result("No search results found."), metrics | {"status": "no_results"}
        try:
            blocks = [_passages(hits) for hits in results]
        except (KeyError, TypeError, AttributeError) as err:
            return _result(f"Error processing search results: {err!r}"), metrics | {"status": "processing_error"}
        total = sum(len(hits) if isinstance(hits, list) else 1 for hits in results)
        return _result("\n---\n".join(blocks)), metrics | {"status": "success", "total_results": total}

    def _call(self, queries: list[str]) -> tuple[Any, str | None]:
        """(the service's JSON, None), or (None, what went wrong) after verl's retries."""
        body = json.dumps({"queries": queries, "topk": self.topk, "return_scores": True}).encode()
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        error = "no attempt was made"
        for attempt in range(MAX_RETRIES):
            request = urllib.request.Request(self.url, body, headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    raw = response.read(MAX_BYTES)
            except urllib.error.HTTPError as err:
                error = f"Server Error ({err.code}) on attempt {attempt + 1}/{MAX_RETRIES}"
                if err.code not in RETRY_STATUS:
                    return None, f"HTTP {err.code} {err.reason}"
            except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
                error = f"Connection Error: {getattr(err, 'reason', err)}"
            else:
                try:
                    return json.loads(raw), None
                except ValueError as err:
                    return None, f"API Response JSON Decode Error: {err}, Response: {raw[:200]!r}"
            if attempt < MAX_RETRIES - 1:
                time.sleep(self.retry_delay_s * (attempt + 1))
        return None, error


def _passages(hits: list[dict[str, Any]]) -> str:
    """verl's `_passages2string`: each passage's first line is its title."""
    text = ""
    for index, hit in enumerate(hits):
        title, _, rest = hit["document"]["contents"].partition("\n")
        text += f"Doc {index + 1} (Title: {title})\n{rest}\n\n"
    return text.strip()


def _result(text: str) -> str:
    return json.dumps({"result": text}, ensure_ascii=False)
