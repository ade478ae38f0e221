"""vLLM rollout: an offline `LLM` engine inside the rollout worker, weights synced from the trainer in place.

Design choices, each for a reason:
- The engine core runs in-process (`VLLM_ENABLE_V1_MULTIPROCESSING=0`) so that weight tensors reach vLLM's model
  runner by reference through `collective_rpc`; with a separate engine process they would have to be pickled
  (and tensors from a GPU cannot be).
- Tensor parallelism keeps that: with `tensor_model_parallel_size` k > 1 each training rank runs one vLLM worker
  of a k-way engine (vLLM's `external_launcher`, on the trainer's own torch.distributed group), as verl's SPMD
  rollout does. The k ranks of a group are given the same prompts and seed and produce the same samples; each
  loads the full gathered weights and vLLM keeps its own shard.
- Expert parallelism (`expert_parallel_size` > 1, MoE models) is vLLM's `enable_expert_parallel`, as verl passes
  it: each engine's experts are split whole over its tensor-parallel ranks instead of each expert being sliced
  across them. verl's group is tensor x data parallel; rlc runs no vLLM data parallelism (one engine per
  tensor-parallel group), so where data_parallel_size > 1 its group is the tensor-parallel ranks (the compiler says
  so).
- Log-probs are vLLM's `processed_logprobs` (after temperature), which is what the trainer recomputes from
  `logits / temperature`, so `rollout/logprob_diff` compares like with like.
- Weights are sent in buckets of about `bucket_mb`, cut between decoder layers, so that no second full copy of
  the model is built at once.
- Colocated with training (verl's hybrid engine), the engine sleeps between rollouts. When the trainer's full weights
  will be loaded before the next generation (the usual step), it sleeps at level 2: the KV cache and the weights are
  dropped, not copied to the host and back (about 2 bytes a parameter each way, for weights about to be overwritten);
  the sync then wakes the weights alone, loads them, and only then maps the KV cache (vLLM's `wake_up(tags=...)`, as
  verl orders it), so the trainer's gathered tensors never share the GPU with the KV cache. Where no sync follows
  (validation, a step without an update) it sleeps at level 1, which keeps the weights on the host.
- Samples are requested with `RequestOutputKind.FINAL_ONLY`, as `LLM.generate` does: rlc reads each sample once it
  is done, and vLLM's default (`CUMULATIVE`) would build an output object per running sample at every step.
  `free_cache_engine: false` (verl's switch for the same) keeps it awake and built without sleep mode, as verl
  does: no sleep, no wake-up, the fastest handoff where the GPU holds vLLM's share and training at once.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterable, Iterator
from typing import Any

import torch

from rlc_runtime.rollout.base import Generation, SamplingParams

BUCKET_MB = 512


class VLLMRollout:
    def __init__(self, model_path: str, revision: str | None, rollout: Any, device: str, max_model_len: int,
                 eos_token_ids: list[int], tied_embeddings: bool = False, trust_remote_code: bool = False,
                 bucket_mb: int = BUCKET_MB) -> None:
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        if device == "cpu":
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        from vllm import LLM

        self.device = device
        self.tensor_parallel_size = rollout.tensor_model_parallel_size
        self.eos_token_ids = eos_token_ids
        # vLLM keeps one tensor for tied embeddings; a separate lm_head would be reported as unloadable.
        self.skip = {"lm_head.weight"} if tied_embeddings else set()
        self.bucket_bytes = bucket_mb * 2**20
        self.sleeping = False
        self.weights_dropped = False  # asleep at level 2: only a full load_weights brings the weights back
        self.sleep_enabled = sleeps(rollout, device)
        self.llm = LLM(
            model=model_path, revision=revision, tokenizer_revision=revision, trust_remote_code=trust_remote_code,
            skip_tokenizer_init=not rollout.stop, dtype="float32" if device == "cpu" else rollout.dtype,
            **parallel_options(rollout, device),
            gpu_memory_utilization=rollout.gpu_memory_utilization,
            enforce_eager=rollout.enforce_eager or device == "cpu", max_model_len=max_model_len,
            max_num_batched_tokens=max(rollout.max_num_batched_tokens, max_model_len),
            max_num_seqs=rollout.max_num_seqs, enable_prefix_caching=rollout.enable_prefix_caching,
            enable_sleep_mode=self.sleep_enabled, seed=rollout.seed, load_format=rollout.load_format,
            logprobs_mode="processed_logprobs", worker_extension_cls=f"{__package__}.vllm_worker.WeightSyncExtension",
            disable_log_stats=rollout.disable_log_stats, **rollout.engine_kwargs.vllm,
        )

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[Generation]:
        from vllm.inputs import TokensPrompt

        self.wake_up()  # a second generation in one phase (validation, DAPO's rounds) may find the engine asleep
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], self.sampling(params),
                                    use_tqdm=False)
        return [to_generation(index, sample) for index, output in enumerate(outputs) for sample in output.outputs]

    def sampling(self, params: SamplingParams) -> Any:
        """vLLM's sampling parameters for `params`; vLLM gives the k-th of `n` samples the seed `seed + k`. Only
        the finished sample is returned (the async server reads nothing else; `LLM.generate` sets the same)."""
        from vllm import SamplingParams as VSamplingParams
        from vllm.sampling_params import RequestOutputKind

        return VSamplingParams(
            n=params.n, temperature=params.temperature, top_p=params.top_p, top_k=params.top_k,
            max_tokens=params.max_tokens, stop=list(params.stop) or None, stop_token_ids=self.eos_token_ids,
            logprobs=0, seed=params.seed, detokenize=bool(params.stop), output_kind=RequestOutputKind.FINAL_ONLY,
        )

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        """The trainer's weights, in place. Asleep, the engine wakes its weights alone first and maps its KV cache
        after the load, once the trainer's gathered tensors are freed."""
        if self.sleeping:
            self._wake(["weights"])
        self._load(weights)
        self.weights_dropped = False
        if self.sleeping:
            self._wake(["kv_cache"])
            self.sleeping = False
        self.llm.reset_prefix_cache()

    def _load(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Bucket by bucket (a function of its own: the last bucket's tensors are freed when it returns)."""
        wanted = ((name, tensor) for name, tensor in weights if name not in self.skip)
        for bucket in _buckets(wanted, self.bucket_bytes):
            self.llm.collective_rpc("rlc_load_weights", args=(bucket,))

    def sleep(self, drop_weights: bool = False) -> None:
        """Free the GPU for training. `drop_weights`: the caller loads the full weights before generating again, so
        they are dropped (level 2) rather than kept on the host (level 1)."""
        if self.sleep_enabled and not self.sleeping:
            self.llm.sleep(level=2 if drop_weights else 1)
            self.sleeping, self.weights_dropped = True, drop_weights

    def wake_up(self) -> None:
        if not self.sleeping:
            return
        if self.weights_dropped:
            raise RuntimeError("the vLLM engine dropped its weights when it went to sleep (level 2): load the "
                               "trainer's weights (load_weights) before generating")
        self._wake(None)
        self.sleeping = False

    def _wake(self, tags: list[str] | None) -> None:
        """Wake what `tags` names (vLLM's "weights" and "kv_cache"; None: both)."""
        # The trainer's allocator still caches its update's peak (and, before the KV cache, the gathered weights);
        # vLLM's pool would be claimed on top of it (measured at 1.5B: 134 of 139 GiB instead of 78). Hand it back.
        torch.cuda.empty_cache()
        self.llm.wake_up(tags=tags)


def sleeps(rollout: Any, device: str) -> bool:
    """Whether the engine sleeps between rollouts: on GPUs, with rlc's enable_sleep_mode and verl's
    free_cache_engine both on (verl builds vLLM with `enable_sleep_mode=free_cache_engine`)."""
    return device == "cuda" and bool(rollout.enable_sleep_mode) and bool(rollout.free_cache_engine)


def to_generation(prompt_index: int, sample: Any) -> Generation:
    """A vLLM `CompletionOutput` as a `Generation` (the log-prob of each sampled token)."""
    ids = list(sample.token_ids)
    log_probs = [entry[token].logprob for token, entry in zip(ids, sample.logprobs, strict=True)]
    return Generation(prompt_index, ids, log_probs, "stop" if sample.finish_reason == "stop" else "length")


def parallel_options(rollout: Any, device: str) -> dict[str, Any]:
    """vLLM's parallel arguments: the tensor-parallel layout, and verl's expert-parallel switch (vLLM's
    expert-parallel group is the engine's tensor-parallel ranks: rlc runs no vLLM data parallelism)."""
    return {**_tensor_parallel(rollout.tensor_model_parallel_size, device),
            "enable_expert_parallel": rollout.expert_parallel_size > 1}


def _tensor_parallel(tp: int, device: str) -> dict[str, Any]:
    """One engine per rank, or this rank's worker of a `tp`-way engine spread over `tp` neighbouring ranks."""
    if tp == 1:
        return {"tensor_parallel_size": 1}
    import torch.distributed as dist

    if not dist.is_initialized() or dist.get_world_size() % tp:
        raise ValueError(f"vLLM tensor parallel {tp} needs a torch.distributed group whose size it divides")
    # external_launcher reads the rank from the environment; each rank sees one GPU (Ray's CUDA_VISIBLE_DEVICES).
    os.environ.update(RANK=str(dist.get_rank()), LOCAL_RANK="0")
    if device == "cpu":
        _remove_stale_cpu_shm(dist.get_rank() % tp)
    # vLLM's custom all-reduce opens the peer GPUs' memory, which a process that sees one GPU cannot; NCCL can.
    return {"tensor_parallel_size": tp, "distributed_executor_backend": "external_launcher",
            **({"disable_custom_all_reduce": True} if device == "cuda" else {})}


def _remove_stale_cpu_shm(index: int) -> None:
    """vLLM-CPU's tensor-parallel ranks share memory through /dev/shm segments named by group and rank only
    (`-tp:0-[0-1]-cpushm_0`), and a killed run leaves them behind, after which every later engine fails ("create
    shm in SHMManager failed"). Remove this rank's segments that no live process maps; each rank removes only its
    own, so a peer's fresh segment is never touched."""
    import glob

    mine = set(glob.glob(f"/dev/shm/*-cpushm_{index}"))
    if not mine:
        return
    mapped = set()
    for maps in glob.glob("/proc/[0-9]*/maps"):
        try:
            with open(maps) as lines:
                mapped |= {line.split(maxsplit=5)[-1].strip() for line in lines if "cpushm_" in line}
        except OSError:  # a process that ended, or one we may not read
            continue
    for stale in mine - mapped:
        with contextlib.suppress(OSError):
            os.unlink(stale)


def _buckets(weights: Iterable[tuple[str, torch.Tensor]], limit: int) -> Iterator[list[tuple[str, torch.Tensor]]]:
    """Buckets of about `limit` bytes that never split a decoder layer: vLLM fuses q/k/v and gate/up, and a
    layer reloaded from part of its weights would be processed half-filled."""
    bucket: list[tuple[str, torch.Tensor]] = []
    size = 0
    for name, tensor in weights:
        if size >= limit and _layer_of(name) != _layer_of(bucket[-1][0]):
            yield bucket
            bucket, size = [], 0
        bucket.append((name, tensor))
        size += tensor.numel() * tensor.element_size()
    if bucket:
        yield bucket


def _layer_of(name: str) -> str:
    """`model.layers.3.mlp.up_proj.weight` -> `model.layers.3`; other names -> their module."""
    match = re.match(r"(.*?\.layers\.\d+)\.", name)
    return match.group(1) if match else name.rsplit(".", 1)[0]
