"""An HTTP tool: the call's arguments are POSTed as JSON to `config.url`, and the response body is the answer.

Config: `url` (http or https), `timeout_s` (10), `headers` (a mapping; values of the form `${ENV_NAME}` are read
from the environment at run time, so a token never sits in the tool file). A response that is not 2xx answers
with its status, so the model sees the failure.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import urllib.error
import urllib.request
from typing import Any

from rlc_runtime.tools.base import Tool

MAX_BYTES = 1 << 20


class HttpTool(Tool):
    async def execute(self, instance_id: str, parameters: dict[str, Any], **kwargs: Any) -> str:
        return await asyncio.to_thread(self._post, parameters)

    def _post(self, parameters: dict[str, Any]) -> str:
        url = str(self.config.get("url", ""))
        if not re.match(r"^https?://", url):
            return f"Error: the tool's url {url!r} is not an http(s) URL"
        headers = {"Content-Type": "application/json"} | {
            str(k): _expand(str(v)) for k, v in (self.config.get("headers") or {}).items()}
        request = urllib.request.Request(url, json.dumps(parameters).encode(), headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=float(self.config.get("timeout_s", 10))) as response:
                return response.read(MAX_BYTES).decode("utf-8", "replace")
        except urllib.error.HTTPError as error:
            return f"Error: HTTP {error.code} {error.reason}"


def _expand(value: str) -> str:
    match = re.fullmatch(r"\$\{(\w+)\}", value)
    return os.environ.get(match.group(1), "") if match else value
