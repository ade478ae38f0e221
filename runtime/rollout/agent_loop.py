"""Agent loops: `rollout.mode: async`, where every sample is a coroutine over the `AsyncServer`.

A single-turn loop is one request. The k-th of a prompt's `n` samples is its own request with seed `seed + k`,
the seed vLLM gives the k-th child of an `n`-sample request, and vLLM samples each seeded request with its own
generator, so async single-turn samples are the sync mode's samples token for token.

The tool loop (verl's `ToolAgentLoop`, with `rollout.multi_turn.enable`) alternates: the model writes a turn; the
hermes tool calls in it run (at most `max_parallel_calls`, each bounded by its tool's `call_timeout_s`), and their
answers, rendered by the tokenizer's chat template as `tool` messages, are appended; or else, with an interaction,
the simulated user answers as a `user` message. It stops when the model calls no tool and no interaction
continues, at `max_assistant_turns` / `max_user_turns`, or when the response would pass `response_length` tokens.
The response is every token after the prompt; `response_mask` is 1 on the model's tokens and 0 on the tool and
user tokens (their log-probs are 0), so the loss and the KL see only what the model wrote. A tool that fails or
hangs answers with an error message the model reads; the run goes on.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field, replace
from typing import Any

from rlc_runtime.rollout.base import Generation, SamplingParams
from rlc_runtime.rollout.server import AsyncServer, Lockstep, follow
from rlc_runtime.tools.base import response_text, step_reward
from rlc_runtime.tools.parser import ToolCall, parse_hermes

TURN_SEED_STRIDE = 104_729  # a later turn of a seeded sample draws from its own stream
DEFAULT_CALL_TIMEOUT_S = 30.0


class AsyncRollout:
    """A `RolloutEngine` whose `generate` runs one agent loop per sample on the vLLM engine of `vllm`; weights,
    sleep and wake are the wrapped engine's."""

    def __init__(self, vllm: Any, tool_loop: ToolAgentLoop | None = None) -> None:
        self.vllm, self.tool_loop = vllm, tool_loop

    def generate(self, prompts: list[list[int]], params: SamplingParams,
                 extras: list[dict[str, Any]] | None = None) -> list[Generation]:
        self.vllm.wake_up()
        return asyncio.run(self._generate(prompts, params, extras or [{} for _ in prompts]))

    async def _generate(self, prompts: list[list[int]], params: SamplingParams,
                        extras: list[dict[str, Any]]) -> list[Generation]:
        lockstep = Lockstep() if getattr(self.vllm, "tensor_parallel_size", 1) > 1 else None
        if lockstep is not None and not lockstep.leader:
            follow(self.vllm.llm.llm_engine, lockstep)  # the leader runs the agent loops (see server.py)
            generations = lockstep.share()
            if generations is None:
                raise RuntimeError("the first rank of this tensor-parallel rollout engine failed; its error is in "
                                   "its log")
            return generations
        server = AsyncServer(self.vllm.llm, lockstep)
        samples = []
        for index, prompt in enumerate(prompts):
            for k in range(params.n):
                one = replace(params, n=1, seed=None if params.seed is None else params.seed + k)
                samples.append(self._sample(server, index, prompt, one, extras[index]))
        try:
            generations = list(await asyncio.gather(*samples))
        except BaseException:
            server.close()
            if lockstep is not None:
                lockstep.share(None)  # the followers fail with the leader instead of waiting for its samples
            raise
        server.close()
        return generations if lockstep is None else lockstep.share(generations)

    async def _sample(self, server: AsyncServer, index: int, prompt: list[int], params: SamplingParams,
                      extra: dict[str, Any]) -> Generation:
        if self.tool_loop is None:
            generation = await server.generate(prompt, self.vllm.sampling(params))
        else:
            generation = await self.tool_loop.run(server, self.vllm.sampling, prompt, params, extra)
        generation.prompt_index = index
        return generation

    def load_weights(self, weights: Any) -> None:
        self.vllm.load_weights(weights)

    def sleep(self, drop_weights: bool = False) -> None:
        self.vllm.sleep(drop_weights)

    def wake_up(self) -> None:
        self.vllm.wake_up()

    def __getattr__(self, name: str) -> Any:
        # Everything else (the engine, its settings, other weight paths) is the wrapped vLLM rollout's.
        if name == "vllm":  # not set yet (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.vllm, name)


@dataclass(frozen=True)
class TurnLimits:
    response_length: int  # tokens after the prompt, all turns together
    max_model_len: int
    max_assistant_turns: int | None = None
    max_user_turns: int | None = None
    max_parallel_calls: int = 1
    max_tool_response_length: int = 256  # characters, as verl counts them
    truncate_side: str = "middle"


@dataclass
class Conversation:
    """One sample's conversation as it grows: the response tokens after the prompt, their log-probs and loss mask
    (1 on the model's tokens), the chat messages, and a record of the turns."""

    messages: list[dict[str, Any]]
    ids: list[int] = field(default_factory=list)
    log_probs: list[float] = field(default_factory=list)
    mask: list[int] = field(default_factory=list)
    turns: list[dict[str, Any]] = field(default_factory=list)
    assistant_turns: int = 0
    user_turns: int = 0
    tool_rewards: list[float] = field(default_factory=list)  # step rewards tools returned (verl's `tool_rewards`)

    def add_model_turn(self, turn: Generation, text: str) -> None:
        self.ids += turn.token_ids
        self.log_probs += turn.log_probs
        self.mask += [1] * len(turn.token_ids)
        self.assistant_turns += 1
        self.messages.append({"role": "assistant", "content": text})
        self.turns.append({"role": "assistant", "text": text, "tokens": len(turn.token_ids)})

    def add_context(self, replies: list[dict[str, str]], tokens: list[int]) -> None:
        """Tool or user messages: in the response, out of the loss (log-prob 0, mask 0)."""
        self.ids += tokens
        self.log_probs += [0.0] * len(tokens)
        self.mask += [0] * len(tokens)
        self.messages += replies
        self.turns += [{"role": r["role"], "text": r["content"]} for r in replies]
        self.turns[-1]["tokens"] = len(tokens)

    def generation(self, finish: str) -> Generation:
        trajectory = {"messages": self.messages, "turns": self.turns, "assistant_turns": self.assistant_turns,
                      "user_turns": self.user_turns, "tool_rewards": self.tool_rewards}
        return Generation(0, self.ids, self.log_probs, finish, response_mask=self.mask, trajectory=trajectory)


class ToolAgentLoop:
    def __init__(self, tokenizer: Any, tools: dict[str, Any], interactions: dict[str, Any],
                 limits: TurnLimits) -> None:
        self.tokenizer, self.tools, self.interactions, self.limits = tokenizer, tools, interactions, limits

    async def run(self, server: AsyncServer, sampling: Any, prompt: list[int], params: SamplingParams,
                  extra: dict[str, Any]) -> Generation:
        info = extra.get("extra_info") if isinstance(extra.get("extra_info"), dict) else {}
        tools_kwargs = info.get("tools_kwargs") or {}
        instance = uuid.uuid4().hex
        for name, tool in self.tools.items():
            await tool.create(instance, **(tools_kwargs.get(name, {}).get("create_kwargs", {})))
        interaction = await self._start_interaction(instance, info)
        talk = Conversation([dict(m) for m in extra.get("messages") or []])
        try:
            finish = await self._converse(talk, server, sampling, prompt, params, instance, tools_kwargs, interaction)
        finally:
            await self._release(instance, interaction)
        return talk.generation(finish)

    async def _converse(self, talk: Conversation, server: AsyncServer, sampling: Any, prompt: list[int],
                        params: SamplingParams, instance: str, tools_kwargs: dict[str, Any],
                        interaction: tuple[str, Any, dict[str, Any]] | None) -> str:
        """Turns until the conversation ends; returns the finish reason ("stop" or "length")."""
        limits = self.limits
        while True:
            budget = min(limits.response_length - len(talk.ids), limits.max_model_len - len(prompt) - len(talk.ids))
            if budget <= 0:
                return "length"
            seed = None if params.seed is None else params.seed + TURN_SEED_STRIDE * talk.assistant_turns
            turn = await server.generate(prompt + talk.ids, sampling(replace(params, max_tokens=budget, seed=seed)))
            talk.add_model_turn(turn, self.tokenizer.decode(turn.token_ids, skip_special_tokens=True))
            if turn.finish_reason == "length":
                return "length"
            if limits.max_assistant_turns is not None and talk.assistant_turns >= limits.max_assistant_turns:
                return "stop"
            replies = await self._replies(talk, instance, tools_kwargs, interaction)
            if not replies:
                return "stop"
            tokens = self._encode(replies)
            if len(talk.ids) + len(tokens) >= limits.response_length:  # verl's rule: no room for the reply, stop
                return "length"
            talk.add_context(replies, tokens)

    async def _replies(self, talk: Conversation, instance: str, tools_kwargs: dict[str, Any],
                       interaction: tuple[str, Any, dict[str, Any]] | None) -> list[dict[str, str]]:
        """The tools' answers to the calls of the model's last turn, or else the simulated user's reply; none when
        the conversation is over."""
        calls = parse_hermes(talk.messages[-1]["content"]) if self.tools else []
        if calls:
            answers = await self._call_tools(instance, calls, tools_kwargs)
            talk.tool_rewards += [reward for _, reward in answers if reward is not None]
            return [{"role": "tool", "content": text} for text, _ in answers]
        max_user = self.limits.max_user_turns
        if interaction is None or (max_user is not None and talk.user_turns >= max_user):
            return []
        stop, reply, score, _ = await interaction[1].generate_response(interaction[0], talk.messages,
                                                                       **interaction[2])
        talk.user_turns += 1
        talk.turns.append({"role": "interaction", "score": score, "terminate": bool(stop)})
        return [] if stop else [{"role": "user", "content": str(reply)}]

    async def _call_tools(self, instance: str, calls: list[ToolCall],
                          tools_kwargs: dict[str, Any]) -> list[tuple[str, float | None]]:
        calls = calls[: self.limits.max_parallel_calls]
        answers = await asyncio.gather(*(self._call(instance, call, tools_kwargs) for call in calls))
        return [(self._truncate(text), reward) for text, reward in answers]

    async def _call(self, instance: str, call: ToolCall, tools_kwargs: dict[str, Any]) -> tuple[str, float | None]:
        """The tool's answer to one call, and its step reward when it gave one."""
        if call.error:
            return f"Error: {call.error}", None
        tool = self.tools.get(call.name)
        if tool is None:
            return f"Error: no tool named {call.name!r}; the tools are {', '.join(sorted(self.tools))}", None
        timeout = float(getattr(tool, "config", {}).get("call_timeout_s", DEFAULT_CALL_TIMEOUT_S))
        execute_kwargs = tools_kwargs.get(call.name, {}).get("execute_kwargs", {})
        try:
            result = await asyncio.wait_for(tool.execute(instance, call.arguments, **execute_kwargs), timeout)
        except TimeoutError:
            return f"Error: tool {call.name} did not answer within {timeout:g} s", None
        except Exception as error:  # noqa: BLE001 - a failing tool ends its turn with a message, never the run
            return f"Error: tool {call.name} failed: {type(error).__name__}: {error}", None
        return response_text(result), step_reward(result)

    def _truncate(self, text: str) -> str:
        limit, side = self.limits.max_tool_response_length, self.limits.truncate_side
        if len(text) <= limit:
            return text
        if side == "left":
            return "...(truncated)" + text[-limit:]
        if side == "right":
            return text[:limit] + "...(truncated)"
        return text[: limit // 2] + "...(truncated)..." + text[len(text) - (limit - limit // 2):]

    def _encode(self, messages: list[dict[str, str]]) -> list[int]:
        """The tokens the chat template writes for `messages` after an assistant turn, with the opening of the
        next assistant turn: the rendering of a stand-in conversation with and without them, the difference
        tokenized (so a template's BOS or default system prompt is not repeated)."""
        base = [{"role": "user", "content": "?"}, {"role": "assistant", "content": "!"}]
        before = self.tokenizer.apply_chat_template(base, tokenize=False)
        after = self.tokenizer.apply_chat_template(base + messages, tokenize=False, add_generation_prompt=True)
        if not after.startswith(before):
            raise ValueError("the chat template renders a conversation's earlier turns differently once more "
                             "messages follow; rlc cannot append tool turns to it")
        return list(self.tokenizer(after[len(before):], add_special_tokens=False)["input_ids"])

    async def _start_interaction(self, instance: str, info: Any) -> tuple[str, Any, dict[str, Any]] | None:
        if not self.interactions:
            return None
        kwargs = dict(info.get("interaction_kwargs") or {}) if isinstance(info, dict) else {}
        name = kwargs.get("name", next(iter(self.interactions)))
        interaction = self.interactions.get(name)
        if interaction is None:
            raise ValueError(f"extra_info.interaction_kwargs.name {name!r} is not a declared interaction; they are "
                             f"{', '.join(self.interactions)}")
        await interaction.start_interaction(instance, **kwargs)
        return instance, interaction, kwargs

    async def _release(self, instance: str, interaction: tuple[str, Any, dict[str, Any]] | None) -> None:
        for tool in self.tools.values():
            try:
                await tool.release(instance)
            except Exception as error:  # noqa: BLE001 - cleanup of one sample must not end the rollout
                print(f"rlc_runtime: warning: releasing tool {tool.name}: {error}", flush=True)
        if interaction is not None:
            await interaction[1].finalize_interaction(instance)
