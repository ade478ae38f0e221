"""The rollout role: which engine generates, with which sampling, and how its samples become a `TokenBatch`.

By default rollout is colocated with training, as verl's hybrid engine does it: every training rank holds a rollout
engine and generates for its own slice of the prompts, and after each update the rank loads the trainer's weights
into its engine in place (`named_weights` -> `load_weights`), without crossing a process boundary. With
`hybrid_engine: false` the engines run on ranks of their own (`RolloutWorker`), keep their GPUs (no sleep), and
receive the weights gathered on training rank 0 in fixed-size buckets over a process group of their own
(`rlc_runtime.weight_transfer`). `rollout.name` chooses the engine (`hf` or `vllm`); both implement
`rlc_runtime.rollout.base.RolloutEngine`. With `mode: async` the vLLM engine is wrapped in an `AsyncRollout` (one
agent loop per sample; the tool loop with `multi_turn.enable`), which also needs each prompt's messages and
extra_info: they travel in the request beside the prompts.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import torch

from rlc_runtime.batch import TokenBatch
from rlc_runtime.rollout.agent_loop import AsyncRollout, ToolAgentLoop, TurnLimits
from rlc_runtime.rollout.base import Generation, RolloutEngine, SamplingParams
from rlc_runtime.weight_transfer import BroadcastChannel, Bucket, IpcChannel
from rlc_runtime.workers.group import RankWorker


class RolloutWorker(RankWorker):
    """A rank that only generates (`hybrid_engine: false`)."""

    def __init__(self, rank: int, world_size: int, device: str, config: dict[str, Any]) -> None:
        super().__init__(rank, world_size, device)
        from rlc.config.root import RLCConfig

        self.cfg = RLCConfig.model_validate(config)
        self.engine: Any = None

    def build(self) -> None:
        from rlc_runtime.models import load_tokenizer

        self.engine = make_rollout(self.cfg, self.device, load_tokenizer(self.cfg.actor_rollout_ref.model))

    def generate(self, request: GenerationRequest) -> tuple[list[Generation], float]:
        return timed_generate(self.engine, request)

    def join_weight_channel(self, address: tuple[str, int], size: int, timeout_s: int, buckets: list[Bucket],
                            handles: list[Any] | None = None) -> None:
        """Rank r becomes rank r + 1 of the weight channel from training rank 0 (or, sharing its GPU, maps the
        trainer's buffers from their IPC handles)."""
        self.weight_buckets = buckets
        if handles is not None:
            self.channel: Any = IpcChannel(self.device, buckets)
            self.channel.open(handles)
        else:
            self.channel = BroadcastChannel(*address, self.rank + 1, size, self.device, timeout_s)

    def receive_weights(self) -> None:
        """The trainer's weights into the engine, one bucket at a time (its views live until the next bucket)."""
        for bucket in self.channel.receive(self.weight_buckets):
            self.engine.load_weights(bucket)


# One engine's prompts, sampling, and what an agent loop needs of each prompt's row (its messages, extra_info).
GenerationRequest = tuple[list[list[int]], SamplingParams, list[dict[str, Any]]]


def generate(engine: RolloutEngine, request: GenerationRequest) -> list[Generation]:
    prompts, params, extras = request
    if not prompts:
        return []
    if isinstance(engine, AsyncRollout):
        return engine.generate(prompts, params, extras)
    return engine.generate(prompts, params)


def timed_generate(engine: RolloutEngine, request: GenerationRequest) -> tuple[list[Generation], float]:
    """`generate`, and the seconds it took on this rank."""
    start = time.perf_counter()
    generations = generate(engine, request)
    return generations, time.perf_counter() - start


def engine_requests(prompts: list[list[int]], params: SamplingParams, groups: list[list[int]],
                    extras: list[dict[str, Any]] | None = None) -> tuple[list[GenerationRequest], list[range]]:
    """Each rank's request, for rollout engines spanning the ranks of `groups` (the topology's rollout groups): an
    engine's ranks get the same slice of the prompts and the same seed, so they sample alike; engines draw
    different streams (steps are 1 apart, so engines are spaced widely). Also each engine's slice."""
    slices = split_prompts(len(prompts), len(groups))
    extras = extras or [{} for _ in prompts]
    requests: list[GenerationRequest] = [([], params, [])] * sum(len(g) for g in groups)
    for index, (ranks, part) in enumerate(zip(groups, slices, strict=True)):
        seeded = params if params.seed is None else replace(params, seed=params.seed + 1_000_003 * index)
        for rank in ranks:
            requests[rank] = ([prompts[i] for i in part], seeded, [extras[i] for i in part])
    return requests, slices


def make_rollout(cfg: Any, device: str, tokenizer: Any) -> RolloutEngine:
    """The configured engine, loaded from the actor's model (its weights are replaced by the first sync)."""
    rollout, model = cfg.actor_rollout_ref.rollout, cfg.actor_rollout_ref.model
    eos = _eos_ids(tokenizer)
    if rollout.name == "vllm":
        from transformers import AutoConfig

        from rlc_runtime.rollout.vllm import VLLMRollout

        hf_config = AutoConfig.from_pretrained(model.path, revision=model.revision,
                                               trust_remote_code=model.trust_remote_code)
        max_len = rollout.max_model_len or rollout.prompt_length + rollout.response_length
        engine = VLLMRollout(model.path, model.revision, rollout, device, max_len, eos,
                             tied_embeddings=bool(getattr(hf_config, "tie_word_embeddings", False)),
                             trust_remote_code=model.trust_remote_code)
        if rollout.mode == "async":
            return AsyncRollout(engine, tool_loop(rollout, tokenizer, max_len) if rollout.multi_turn.enable else None)
        return engine
    from rlc_runtime.rollout.hf import HFRollout

    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    return HFRollout(model, device, dtype, tokenizer=tokenizer)


def tool_loop(rollout: Any, tokenizer: Any, max_model_len: int) -> ToolAgentLoop:
    """The multi-turn loop of `rollout.multi_turn`: its tools and interactions built from their files."""
    from rlc.tool_config import read_interactions, read_tools
    from rlc_runtime.tools.base import build_interactions, build_tools

    turn = rollout.multi_turn
    tools = build_tools(read_tools(turn.tool_config_path)) if turn.tool_config_path else {}
    interactions = build_interactions(read_interactions(turn.interaction_config_path)) \
        if turn.interaction_config_path else {}
    limits = TurnLimits(rollout.response_length, max_model_len, turn.max_assistant_turns, turn.max_user_turns,
                        turn.max_parallel_calls, turn.max_tool_response_length, turn.tool_response_truncate_side)
    return ToolAgentLoop(tokenizer, tools, interactions, limits)


def sampling_params(cfg: Any, *, validate: bool = False, seed: int | None = None) -> SamplingParams:
    """verl's rules: `do_sample: false` means greedy; validation samples with `val_kwargs`."""
    rollout = cfg.actor_rollout_ref.rollout
    source = rollout.val_kwargs if validate else rollout
    if not source.do_sample:
        return SamplingParams(n=1, temperature=0.0, max_tokens=rollout.response_length, stop=tuple(rollout.stop))
    return SamplingParams(n=source.n, temperature=source.temperature, top_p=source.top_p, top_k=source.top_k,
                          max_tokens=rollout.response_length, stop=tuple(rollout.stop), seed=seed)


def build_batch(prompts: list[list[int]], generations: list[Generation], pad_id: int,
                max_response_length: int) -> TokenBatch:
    """verl's layout: prompts left-padded, responses right-padded, both to the longest in this batch.

    `generations[i].prompt_index` indexes `prompts`; `meta["uid"]` is that index (the GRPO group of the sample).
    """
    responses = [g.token_ids[:max_response_length] for g in generations]
    rows = [prompts[g.prompt_index] for g in generations]
    p_len, r_len = max(len(p) for p in rows), max(1, max(len(r) for r in responses))
    size = len(generations)
    input_ids = torch.full((size, p_len + r_len), pad_id, dtype=torch.long)
    attention = torch.zeros((size, p_len + r_len), dtype=torch.long)
    rollout_log_probs = torch.zeros((size, r_len))
    response_mask = torch.zeros((size, r_len))
    for i, (prompt, response, g) in enumerate(zip(rows, responses, generations, strict=True)):
        input_ids[i, p_len - len(prompt): p_len] = torch.tensor(prompt, dtype=torch.long)
        input_ids[i, p_len: p_len + len(response)] = torch.tensor(response, dtype=torch.long)
        attention[i, p_len - len(prompt): p_len + len(response)] = 1
        rollout_log_probs[i, : len(response)] = torch.tensor(g.log_probs[: len(response)])
        # Tool and user tokens of a multi-turn response are context, not actions: out of the loss and the KL.
        own = g.response_mask[: len(response)] if g.response_mask is not None else [1] * len(response)
        response_mask[i, : len(response)] = torch.tensor(own, dtype=torch.float32)
    position_ids = (attention.cumsum(-1) - 1).clamp(min=0)
    meta = {"uid": [g.prompt_index for g in generations], "finish_reason": [g.finish_reason for g in generations]}
    if any(g.trajectory is not None for g in generations):
        meta["trajectory"] = [g.trajectory for g in generations]
    return TokenBatch(
        input_ids=input_ids, attention_mask=attention, position_ids=position_ids,
        responses=input_ids[:, p_len:].clone(), response_mask=response_mask, rollout_log_probs=rollout_log_probs,
        meta=meta,
    )


def split_prompts(count: int, parts: int) -> list[range]:
    """Contiguous, near-equal slices of `count` prompts, one per rank (some may be one shorter, or empty)."""
    base, extra = divmod(count, parts)
    bounds = [0]
    for part in range(parts):
        bounds.append(bounds[-1] + base + (part < extra))
    return [range(bounds[i], bounds[i + 1]) for i in range(parts)]


def _eos_ids(tokenizer: Any) -> list[int]:
    eos = tokenizer.eos_token_id
    ids = eos if isinstance(eos, list) else [eos]
    return [i for i in ids if i is not None]
