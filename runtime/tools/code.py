"""A code-execution tool: the model's Python runs in the reward server's sandbox (`rlc.reward_server.sandbox`:
namespaces, seccomp, cgroup limits), and the tool answers with what it printed.

Config: `timeout_s` (wall clock per run, 5), `memory_mb` (512), `allow_unsafe` (false: on a host that cannot
isolate programs the tool answers with the sandbox's refusal instead of running them). Arguments: `code`, and
optionally `stdin`.
"""

from __future__ import annotations

import asyncio
from typing import Any

from rlc_runtime.tools.base import Tool


class CodeTool(Tool):
    async def execute(self, instance_id: str, parameters: dict[str, Any], **kwargs: Any) -> str:
        from rlc.reward_server.sandbox import Limits, run_python

        code = parameters.get("code")
        if not isinstance(code, str):
            return "Error: the argument `code` (a string of Python) is missing"
        limits = Limits(time_s=float(self.config.get("timeout_s", 5.0)),
                        memory_mb=int(self.config.get("memory_mb", 512)))
        result = await asyncio.to_thread(run_python, code, str(parameters.get("stdin", "")), limits,
                                         allow_unsafe=bool(self.config.get("allow_unsafe", False)))
        if result.status == "timeout":
            return f"Error: the program ran past {limits.time_s:g} s\n{result.stdout}"
        if result.status == "error":
            return f"{result.stdout}Error (exit {result.returncode}):\n{result.stderr[-2000:]}"
        return result.stdout
