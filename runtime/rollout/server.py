"""Async rollout: vLLM's engine served to coroutines, with continuous batching.

Each sample is a coroutine (an agent loop) that awaits `AsyncServer.generate` once per assistant turn; the server
adds the request to vLLM's engine at once, and one stepping task runs the engine while any request is open, so a
conversation's next turn joins the running batch as soon as its tool answers (vLLM's scheduler admits new requests
at every step), rather than waiting for the slowest sample of a batch.

Why not vLLM's `AsyncLLM`: in vLLM 0.32 it always runs its engine core in a separate process, so the trainer's
weights would have to be serialised into it at every sync, and the tensor-parallel `external_launcher` mode (one
engine worker per training rank on the trainer's own process group) cannot run under it. Driving the same
in-process engine (`LLM.llm_engine`, as `LLM.generate` does) from an event loop keeps the in-place weight sync and
the colocated sleep/wake exactly as in sync mode. The engine steps in the loop's thread (vLLM's engine is not
thread-safe), between steps the loop runs the coroutines: tools run in threads or as awaitables meanwhile.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

from rlc_runtime.rollout.base import Generation


class AsyncServer:
    def __init__(self, llm: Any) -> None:
        self.engine = llm.llm_engine
        self.open: dict[str, asyncio.Future[Any]] = {}
        self.ids = itertools.count()
        self.stepping: asyncio.Task[None] | None = None

    async def generate(self, prompt_ids: list[int], sampling: Any) -> Generation:
        """One completion (`sampling.n` must be 1) of `prompt_ids`, as a `Generation` of prompt index 0."""
        from vllm.inputs import TokensPrompt

        from rlc_runtime.rollout.vllm import to_generation

        request_id = f"rlc-{next(self.ids)}"
        done = asyncio.get_running_loop().create_future()
        self.open[request_id] = done
        self.engine.add_request(request_id, TokensPrompt(prompt_token_ids=prompt_ids), sampling)
        if self.stepping is None or self.stepping.done():
            self.stepping = asyncio.create_task(self._step())
        return to_generation(0, (await done).outputs[0])

    async def _step(self) -> None:
        # Yield first: coroutines started together all add their requests before the first step, so a batch
        # of single-turn samples is scheduled as `LLM.generate` schedules it.
        await asyncio.sleep(0)
        try:
            while self.open:
                for output in self.engine.step():
                    if output.finished and output.request_id in self.open:
                        self.open.pop(output.request_id).set_result(output)
                await asyncio.sleep(0)
        except Exception as error:  # noqa: BLE001 - an engine failure must reach every waiting sample
            for request_id, waiting in list(self.open.items()):
                self.open.pop(request_id)
                if not waiting.done():
                    waiting.set_exception(error)
            raise
