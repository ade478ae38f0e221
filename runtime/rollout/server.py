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

Tensor parallelism (`external_launcher`: the k ranks of an engine each run one worker, and every `step` is a
collective) needs the k engines to see the same requests before the same step. Agent loops on k ranks would not
(a tool answers sooner on one rank than on another), so with k > 1 only the group's first rank runs the agent
loops (`Lockstep.leader`); before each step it sends the requests added since the last one to the other ranks,
which add them and step with it (`follow`), and at the end it sends them the finished samples. The k ranks thus
return the same samples, as they do in sync mode, and the tools run once per sample, not k times.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

from rlc_runtime.rollout.base import Generation

Request = tuple[str, list[int], Any]  # request id, prompt token ids, vLLM sampling parameters


class Lockstep:
    """The ranks of one tensor-parallel engine, through vLLM's own group for it (its gloo CPU group)."""

    def __init__(self) -> None:
        from vllm.distributed import get_tp_group

        self.group = get_tp_group()
        self.leader = self.group.rank_in_group == 0

    def share(self, obj: Any = None) -> Any:
        """The leader's `obj`, on every rank of the engine."""
        import torch.distributed as dist

        box = [obj if self.leader else None]
        dist.broadcast_object_list(box, src=self.group.ranks[0], group=self.group.cpu_group)
        return box[0]


def follow(engine: Any, lockstep: Lockstep) -> None:
    """A follower rank's engine: add what the leader added and step with it, until the leader says it is done."""
    from vllm.inputs import TokensPrompt

    while (requests := lockstep.share()) is not None:
        for request_id, prompt_ids, sampling in requests:
            engine.add_request(request_id, TokensPrompt(prompt_token_ids=prompt_ids), sampling)
        engine.step()


class AsyncServer:
    def __init__(self, llm: Any, lockstep: Lockstep | None = None) -> None:
        self.engine = llm.llm_engine
        self.lockstep = lockstep  # set on the leader of a tensor-parallel engine
        self.open: dict[str, asyncio.Future[Any]] = {}
        self.pending: list[Request] = []
        self.ids = itertools.count()
        self.stepping: asyncio.Task[None] | None = None

    async def generate(self, prompt_ids: list[int], sampling: Any) -> Generation:
        """One completion (`sampling.n` must be 1) of `prompt_ids`, as a `Generation` of prompt index 0."""
        from rlc_runtime.rollout.vllm import to_generation

        request_id = f"rlc-{next(self.ids)}"
        done = asyncio.get_running_loop().create_future()
        self.open[request_id] = done
        self.pending.append((request_id, list(prompt_ids), sampling))
        if self.stepping is None or self.stepping.done():
            self.stepping = asyncio.create_task(self._step())
        return to_generation(0, (await done).outputs[0])

    def close(self) -> None:
        """The rollout is over: the followers stop stepping."""
        if self.lockstep is not None:
            self.lockstep.share(None)

    def _add_pending(self) -> None:
        from vllm.inputs import TokensPrompt

        requests, self.pending = self.pending, []
        if self.lockstep is not None:
            self.lockstep.share(requests)
        for request_id, prompt_ids, sampling in requests:
            self.engine.add_request(request_id, TokensPrompt(prompt_token_ids=prompt_ids), sampling)

    async def _step(self) -> None:
        # Yield first: coroutines started together all add their requests before the first step, so a batch
        # of single-turn samples is scheduled as `LLM.generate` schedules it.
        await asyncio.sleep(0)
        try:
            while self.open:
                self._add_pending()
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
