"""The rollout role: which engine generates, with which sampling, and how its samples become a `TokenBatch`.

By default rollout is colocated with training, as verl's hybrid engine does it: every training rank holds a rollout
engine and generates for its own slice of the prompts, and after each update the rank loads the trainer's weights
into its engine in place (`named_weights` -> `load_weights`), without crossing a process boundary. With
`hybrid_engine: false` the engines run on ranks of their own (`RolloutWorker`), keep their GPUs (no sleep), and
receive the weights gathered on training rank 0 in fixed-size buckets over a process group of their own
(`rlc_runtime.weight_transfer`). `rollout.name` chooses the engine (`hf`
or `vllm`); both implement `rlc_runtime.rollout.base.RolloutEngine`.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch

from rlc_runtime.batch import TokenBatch
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

    def generate(self, request: GenerationRequest) -> list[Generation]:
        return generate(self.engine, request)

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


GenerationRequest = tuple[list[list[int]], SamplingParams]  # one engine's prompts and sampling


def generate(engine: RolloutEngine, request: GenerationRequest) -> list[Generation]:
    prompts, params = request
    return engine.generate(prompts, params) if prompts else []


def engine_requests(prompts: list[list[int]], params: SamplingParams,
                    groups: list[list[int]]) -> tuple[list[GenerationRequest], list[range]]:
    """Each rank's request, for rollout engines spanning the ranks of `groups` (the topology's rollout groups): an
    engine's ranks get the same slice of the prompts and the same seed, so they sample alike; engines draw
    different streams (steps are 1 apart, so engines are spaced widely). Also each engine's slice."""
    slices = split_prompts(len(prompts), len(groups))
    requests: list[GenerationRequest] = [([], params)] * sum(len(g) for g in groups)
    for index, (ranks, part) in enumerate(zip(groups, slices, strict=True)):
        seeded = params if params.seed is None else replace(params, seed=params.seed + 1_000_003 * index)
        for rank in ranks:
            requests[rank] = ([prompts[i] for i in part], seeded)
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
        return VLLMRollout(model.path, model.revision, rollout, device, max_len, eos,
                           tied_embeddings=bool(getattr(hf_config, "tie_word_embeddings", False)),
                           trust_remote_code=model.trust_remote_code)
    from rlc_runtime.rollout.hf import HFRollout

    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    return HFRollout(model, device, dtype, tokenizer=tokenizer)


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
    for i, (prompt, response, g) in enumerate(zip(rows, responses, generations, strict=True)):
        input_ids[i, p_len - len(prompt): p_len] = torch.tensor(prompt, dtype=torch.long)
        input_ids[i, p_len: p_len + len(response)] = torch.tensor(response, dtype=torch.long)
        attention[i, p_len - len(prompt): p_len + len(response)] = 1
        rollout_log_probs[i, : len(response)] = torch.tensor(g.log_probs[: len(response)])
    position_ids = (attention.cumsum(-1) - 1).clamp(min=0)
    return TokenBatch(
        input_ids=input_ids, attention_mask=attention, position_ids=position_ids,
        responses=input_ids[:, p_len:].clone(),
        response_mask=attention[:, p_len:].float(), rollout_log_probs=rollout_log_probs,
        meta={"uid": [g.prompt_index for g in generations],
              "finish_reason": [g.finish_reason for g in generations]},
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
