"""Async rollout on vLLM-CPU: agent loops over the in-process engine reproduce sync sampling, and the tool loop
records tool turns as context the loss does not see.

One engine for the module (each start costs ~20-35 s on 2 cores); the tool-calling model is the bundled
examples/models/tiny-qwen2-tools, taught to call `add` (examples/models/build_tiny_tools.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from rlc.config.rollout import Rollout
from rlc.tool_config import read_tools
from rlc_runtime.rollout.agent_loop import AsyncRollout, ToolAgentLoop, TurnLimits
from rlc_runtime.rollout.base import Generation, SamplingParams
from rlc_runtime.rollout.vllm import VLLMRollout
from rlc_runtime.tools.base import Tool, build_tools
from rlc_runtime.tools.calculator import AddTool

ROOT = Path(__file__).resolve().parents[3]
MODEL = ROOT / "examples/models/tiny-qwen2-tools"
QUESTIONS = [(23, 45), (31, 17), (12, 40), (48, 26)]
MAX_LEN = 96


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(MODEL)


@pytest.fixture(scope="module")
def engine(tokenizer: Any) -> VLLMRollout:
    rollout = Rollout(name="vllm", tensor_model_parallel_size=1, load_format="auto", gpu_memory_utilization=0.2,
                      max_num_seqs=64)
    return VLLMRollout(str(MODEL), None, rollout, device="cpu", max_model_len=MAX_LEN,
                       eos_token_ids=[tokenizer.eos_token_id], tied_embeddings=True)


def prompts(tokenizer: Any) -> list[list[int]]:
    return [tokenizer(f"<|bos|><|user|>{a}+{b}=<|assistant|>", add_special_tokens=False).input_ids
            for a, b in QUESTIONS]


def extras() -> list[dict[str, Any]]:
    return [{"messages": [{"role": "user", "content": f"{a}+{b}="}], "extra_info": {}} for a, b in QUESTIONS]


def tool_rollout(engine: VLLMRollout, tokenizer: Any, tools: dict[str, Any]) -> AsyncRollout:
    limits = TurnLimits(response_length=80, max_model_len=MAX_LEN, max_assistant_turns=2)
    return AsyncRollout(engine, ToolAgentLoop(tokenizer, tools, {}, limits))


def encode(tokenizer: Any, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False).input_ids


def split_turns(g: Generation) -> list[tuple[int, list[int]]]:
    """(mask value, tokens) runs of a response."""
    runs: list[tuple[int, list[int]]] = []
    for token, mask in zip(g.token_ids, g.response_mask, strict=True):
        if runs and runs[-1][0] == mask:
            runs[-1][1].append(token)
        else:
            runs.append((mask, [token]))
    return runs


def test_async_single_turn_equals_sync_token_for_token(engine: VLLMRollout, tokenizer: Any) -> None:
    params = SamplingParams(n=4, temperature=1.0, max_tokens=40, seed=11)
    sync = engine.generate(prompts(tokenizer), params)
    async_ = AsyncRollout(engine).generate(prompts(tokenizer), params)
    assert [(g.prompt_index, g.token_ids, g.finish_reason) for g in async_] == \
        [(g.prompt_index, g.token_ids, g.finish_reason) for g in sync]
    assert max(abs(a - b) for x, y in zip(async_, sync, strict=True)
               for a, b in zip(x.log_probs, y.log_probs, strict=True)) < 1e-5
    # not a constant model: the 16 samples are not all one answer
    assert len({tuple(g.token_ids) for g in sync}) > 4
    other = AsyncRollout(engine).generate(prompts(tokenizer), replace(params, seed=12))
    assert [g.token_ids for g in other] != [g.token_ids for g in sync]  # the seed matters


def test_async_samples_come_back_once_each_when_finished(engine: VLLMRollout, tokenizer: Any) -> None:
    """vLLM hands the async server one output per sample, when it is done (as `LLM.generate` asks), not one per
    running sample at every step: those would cost the GPU host about a second per 100k generated tokens."""
    llm_engine = engine.llm.llm_engine
    seen: list[Any] = []
    step = llm_engine.step

    def counted() -> list[Any]:  # the real step; only its outputs are counted
        outputs = step()
        seen.extend(outputs)
        return outputs

    llm_engine.step = counted
    try:
        samples = AsyncRollout(engine).generate(prompts(tokenizer), SamplingParams(n=4, max_tokens=40, seed=11))
    finally:
        del llm_engine.step
    assert sum(len(g.token_ids) for g in samples) > 2 * len(samples)  # samples ran over several steps
    assert len(seen) == len(samples) == 16 and all(output.finished for output in seen)


def test_tool_turns_are_in_the_response_and_out_of_the_mask(engine: VLLMRollout, tokenizer: Any) -> None:
    tools = build_tools(read_tools(str(ROOT / "examples/tools/calculator.yaml")))
    samples = tool_rollout(engine, tokenizer, tools).generate(
        prompts(tokenizer), SamplingParams(n=6, temperature=1.0, max_tokens=64, seed=3), extras())
    called = [g for g in samples if g.trajectory["assistant_turns"] == 2]
    assert len(called) >= 2, [tokenizer.decode(g.token_ids) for g in samples]  # the model calls ~30% of the time
    eos = tokenizer.eos_token_id
    for g in called:
        (m1, call), (m2, reply), (m3, answer) = split_turns(g)
        assert (m1, m2, m3) == (1, 0, 1) and call[-1] == eos and answer[-1] == eos
        # the arguments the model wrote (it copies the question's numbers, not always right), read with json
        text = tokenizer.decode(call, skip_special_tokens=True)
        assert text.startswith("<tool_call>") and text.endswith("</tool_call>")
        arguments = json.loads(text[len("<tool_call>"): -len("</tool_call>")])["arguments"]
        a, b = arguments["a"], arguments["b"]
        # the tool's reply, token for token as the tokenizer encodes the chat template's rendering of it
        assert reply == encode(tokenizer, f"<|system|>{a} + {b} = {a + b}\n<|assistant|>")
        assert all(lp == 0.0 for lp, m in zip(g.log_probs, g.response_mask, strict=True) if m == 0)
        assert all(lp <= 0.0 for lp in g.log_probs) and any(lp < 0.0 for lp in g.log_probs)
        roles = [m["role"] for m in g.trajectory["messages"]]
        assert roles == ["user", "assistant", "tool", "assistant"]
        assert g.trajectory["messages"][2]["content"] == f"{a} + {b} = {a + b}\n"
        assert g.trajectory["tool_rewards"] == []  # the calculator answers with text only
    # the batch carries the mask to the loss: tool tokens 0, the model's 1
    from rlc_runtime.workers.rollout import build_batch

    batch = build_batch(prompts(tokenizer), samples, tokenizer.pad_token_id, 64)
    for row, g in enumerate(samples):
        n = len(g.token_ids)
        assert batch.response_mask[row, :n].tolist() == [float(m) for m in g.response_mask]
        assert batch.attention_mask[row, -batch.responses.shape[1]:][:n].tolist() == [1] * n
    others = [g for g in samples if g.trajectory["assistant_turns"] == 1]
    assert all(g.response_mask == [1] * len(g.token_ids) for g in others)


class HangingTool(Tool):
    async def execute(self, instance_id: str, parameters: dict[str, Any], **kwargs: Any) -> str:
        await asyncio.sleep(3600)
        return "never"


class CrashingTool(Tool):
    async def execute(self, instance_id: str, parameters: dict[str, Any], **kwargs: Any) -> str:
        raise RuntimeError("fire")


@pytest.mark.parametrize(("tool", "message"), [
    (HangingTool, "Error: tool add did not answer within 0.5 s"),
    (CrashingTool, "Error: tool add failed: RuntimeError: fire")])
def test_a_hanging_or_crashing_tool_ends_its_turn_with_an_error(engine: VLLMRollout, tokenizer: Any,
                                                                tool: type[Tool], message: str) -> None:
    schema = read_tools(str(ROOT / "examples/tools/calculator.yaml"))[0].schema
    rollout = tool_rollout(engine, tokenizer, {"add": tool({"call_timeout_s": 0.5}, schema)})
    started = time.monotonic()
    samples = rollout.generate(prompts(tokenizer), SamplingParams(n=6, temperature=1.0, max_tokens=64, seed=3),
                               extras())
    assert time.monotonic() - started < 60  # the hanging calls were abandoned, not awaited
    called = [g for g in samples if g.trajectory["assistant_turns"] == 2]
    assert called
    for g in called:
        assert g.trajectory["messages"][2] == {"role": "tool", "content": message}
        assert split_turns(g)[1] == (0, encode(tokenizer, f"<|system|>{message}<|assistant|>"))


def test_an_interaction_answers_as_the_user_and_is_masked(engine: VLLMRollout, tokenizer: Any) -> None:
    from rlc_runtime.tools.interaction import AnswerCheck

    retry = "No. Again:"
    limits = TurnLimits(response_length=64, max_model_len=MAX_LEN, max_user_turns=1)
    loop = ToolAgentLoop(tokenizer, {}, {"check": AnswerCheck({"retry_message": retry})}, limits)
    rows = [{"messages": [{"role": "user", "content": f"{a}+{b}="}],
             "extra_info": {"interaction_kwargs": {"name": "check", "ground_truth": str(a + b)}}}
            for a, b in QUESTIONS]
    samples = AsyncRollout(engine, loop).generate(
        prompts(tokenizer), SamplingParams(n=4, temperature=1.0, max_tokens=64, seed=5), rows)
    wrong_first = [g for g in samples if g.trajectory["user_turns"] == 1 and len(g.trajectory["messages"]) == 4]
    assert wrong_first  # the model guesses without a tool most of the time, and guesses are wrong
    for g in wrong_first:
        roles = [m["role"] for m in g.trajectory["messages"]]
        assert roles == ["user", "assistant", "user", "assistant"] and g.trajectory["messages"][2]["content"] == retry
        runs = split_turns(g)
        assert [m for m, _ in runs] == [1, 0, 1]
        assert runs[1][1] == encode(tokenizer, f"<|user|>{retry}<|assistant|>")
    # at most one user turn (max_user_turns), and a right first answer ends the conversation with no user turn
    assert all(g.trajectory["user_turns"] <= 1 for g in samples)


class LoggedAdd(AddTool):
    """The calculator, logging each call, and slower on the second rank: were the ranks to run the tools each,
    their engines would get the tool turns at different steps."""

    async def execute(self, instance_id: str, parameters: dict[str, Any], **kwargs: Any) -> str:
        await asyncio.sleep(self.config["delay_s"])
        with open(self.config["log"], "a") as log:
            log.write(json.dumps(parameters) + "\n")
        return await super().execute(instance_id, parameters)


def _tensor_parallel_rank(rank: int, port: int, out: Path, params: SamplingParams) -> None:
    """One of two ranks of a 2-way vLLM-CPU engine (external_launcher on a gloo group, as the trainer runs it)."""
    import torch
    import torch.distributed as dist
    from transformers import AutoTokenizer

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
                      LOCAL_RANK="0")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        tokenizer = AutoTokenizer.from_pretrained(MODEL)
        rollout = Rollout(name="vllm", tensor_model_parallel_size=2, load_format="auto", gpu_memory_utilization=0.2,
                          max_num_seqs=64)
        engine = VLLMRollout(str(MODEL), None, rollout, device="cpu", max_model_len=MAX_LEN,
                             eos_token_ids=[tokenizer.eos_token_id], tied_embeddings=True)
        schema = read_tools(str(ROOT / "examples/tools/calculator.yaml"))[0].schema
        tools = {"add": LoggedAdd({"log": str(out / f"calls{rank}.txt"), "delay_s": 0.3 * rank}, schema)}
        samples = tool_rollout(engine, tokenizer, tools).generate(prompts(tokenizer), params, extras())
        torch.save(samples, out / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_tensor_parallel_tool_loop_equals_one_rank(engine: VLLMRollout, tokenizer: Any, tmp_path: Path) -> None:
    """Multi-turn at tensor parallel 2: the first rank runs the agent loops, the other steps in lockstep with it;
    both return the samples a single-rank engine draws with the same seeds."""
    import torch
    import torch.multiprocessing as mp

    params = SamplingParams(n=4, temperature=1.0, max_tokens=64, seed=3)
    tools = build_tools(read_tools(str(ROOT / "examples/tools/calculator.yaml")))
    one = tool_rollout(engine, tokenizer, tools).generate(prompts(tokenizer), params, extras())
    assert sum(g.trajectory["assistant_turns"] == 2 for g in one) >= 2  # tool turns are part of what is compared
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.spawn(_tensor_parallel_rank, args=(port, tmp_path, params), nprocs=2, join=True)
    # the calls the tool itself answered (not those the loop refused: unparsable, or naming no tool)
    calls = [m for g in one for m in g.trajectory["messages"] if m["role"] == "tool"
             and (not m["content"].startswith("Error: ") or m["content"] == "Error: a and b must be integers")]
    assert len((tmp_path / "calls0.txt").read_text().splitlines()) == len(calls) > 0  # the first rank runs them
    assert not (tmp_path / "calls1.txt").exists()  # the other only steps its engine
    for rank in (0, 1):
        two = torch.load(tmp_path / f"rank{rank}.pt", weights_only=False)
        assert [(g.prompt_index, g.token_ids, g.response_mask, g.finish_reason) for g in two] == \
            [(g.prompt_index, g.token_ids, g.response_mask, g.finish_reason) for g in one]
        assert [g.trajectory["messages"] for g in two] == [g.trajectory["messages"] for g in one]
        assert max(abs(a - b) for x, y in zip(two, one, strict=True)
                   for a, b in zip(x.log_probs, y.log_probs, strict=True)) < 1e-4
