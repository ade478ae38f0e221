"""The memory estimate against real tensors: parameter, gradient and Adam-state bytes of tiny models built by
transformers and trained one step by torch, FSDP2's shards on two gloo ranks, and the verdict's refusals."""

from __future__ import annotations

import json
import socket
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from transformers import AutoConfig, AutoModelForCausalLM
from typer.testing import CliRunner

from rlc.cli import app
from rlc.diagnostics import CompileError
from rlc.launch import LaunchRequest, prepare
from rlc.loader import load_config
from rlc.memory import GiB, ModelShape, estimate, read_model_config

TINY = Path(__file__).resolve().parents[2] / "examples" / "models" / "tiny-qwen2"
SMALL = dict(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
             num_key_value_heads=2)
FAMILIES = {
    "qwen2, tied embeddings": {"model_type": "qwen2", **SMALL, "tie_word_embeddings": True},
    "llama, biases, untied": {"model_type": "llama", **SMALL, "attention_bias": True, "mlp_bias": True,
                              "tie_word_embeddings": False},
    "qwen3, qk-norm": {"model_type": "qwen3", **SMALL, "head_dim": 32},
    "mixtral": {"model_type": "mixtral", **SMALL, "num_local_experts": 4},
    "qwen2-moe, shared expert, a dense layer": {"model_type": "qwen2_moe", **SMALL, "num_experts": 4,
                                                "moe_intermediate_size": 32, "shared_expert_intermediate_size": 48,
                                                "mlp_only_layers": [1]},
    "qwen3-moe": {"model_type": "qwen3_moe", **SMALL, "num_experts": 4, "moe_intermediate_size": 32,
                  "head_dim": 16},
}

ODD = {"model_type": "qwen2", **SMALL, "vocab_size": 301, "tie_word_embeddings": False}


def _model(config: dict) -> torch.nn.Module:
    kind = config["model_type"]
    return AutoModelForCausalLM.from_config(AutoConfig.for_model(kind, **{k: v for k, v in config.items()
                                                                          if k != "model_type"}))


@pytest.mark.parametrize("family", FAMILIES)
def test_parameter_count_equals_the_model_transformers_builds(family: str) -> None:
    config = FAMILIES[family]
    real = sum(p.numel() for p in _model(config).parameters())
    assert ModelShape.from_config(config).parameters() == real


def _config(tmp_path: Path, model_dir: Path, extra: str = "", gpu_gb: float = 80) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(f"""
algorithm: {{adv_estimator: grpo}}
data: {{train_files: {model_dir}/config.json, train_batch_size: 8, max_prompt_length: 64, max_response_length: 64}}
actor_rollout_ref:
  model: {{path: {model_dir}, enable_gradient_checkpointing: true}}
  actor: {{ppo_mini_batch_size: 8, ppo_micro_batch_size_per_gpu: 4, use_kl_loss: true}}
  rollout: {{name: vllm, n: 4, tensor_model_parallel_size: 1, gpu_memory_utilization: 0.4,
            log_prob_micro_batch_size_per_gpu: 8}}
trainer: {{device: cuda, n_gpus_per_node: 1, gpu_memory_gb: {gpu_gb}}}
{extra}""")
    return path


def _lines(plan: object, phase: str) -> dict[str, float]:
    return {line.what: line.bytes for line in plan.phases[phase]}


def test_weights_gradients_and_adam_state_equal_the_real_tensors(tmp_path: Path) -> None:
    """fp32 weights, their gradients and AdamW's two moments after one real optimizer step."""
    model = AutoModelForCausalLM.from_pretrained(TINY, dtype=torch.float32)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ids = torch.randint(0, 300, (2, 8))
    model(input_ids=ids, labels=ids).loss.backward()
    optimizer.step()
    nbytes = lambda tensors: sum(t.numel() * t.element_size() for t in tensors)  # noqa: E731
    weights = nbytes(model.parameters())
    grads = nbytes(p.grad for p in model.parameters())
    moments = nbytes(t for state in optimizer.state.values() for k, t in state.items() if k != "step")

    config = load_config(_config(tmp_path, TINY)).config
    plan = estimate(config, ModelShape.from_config(read_model_config(str(TINY))), 80 * GiB)
    update = _lines(plan, "update")
    assert (update["actor parameters"], update["actor gradients"], update["actor optimizer"]) == \
        (weights, grads, moments)
    assert update["reference parameters"] == weights / 2  # the reference keeps bf16 weights


def test_a_rollout_sharing_the_gpu_stays_in_every_phase(tmp_path: Path) -> None:
    """Beside the trainer the rollout never sleeps: vLLM's whole pool, and the fp32 weights the trainer leaves in
    its CUDA IPC buckets, count in the update phase too."""
    model = AutoModelForCausalLM.from_pretrained(TINY, dtype=torch.float32)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    sets = ["actor_rollout_ref.hybrid_engine=false", "actor_rollout_ref.rollout.share_trainer_gpu=true"]
    config = load_config(_config(tmp_path, TINY), sets).config
    update = _lines(estimate(config, ModelShape.from_config(read_model_config(str(TINY))), 80 * GiB), "update")
    assert (update["vLLM pool"], update["weight buffers"]) == (0.4 * 80 * GiB, weights)
    assert "vLLM asleep" not in update


@pytest.mark.parametrize("key", ["free_cache_engine", "enable_sleep_mode"])
def test_a_colocated_vllm_kept_awake_holds_its_pool_in_every_phase(tmp_path: Path, key: str) -> None:
    shape = ModelShape.from_config(read_model_config(str(TINY)))
    asleep, awake = (_lines(estimate(load_config(_config(tmp_path, TINY), sets).config, shape, 80 * GiB), "update")
                     for sets in ([], [f"actor_rollout_ref.rollout.{key}=false"]))
    assert "vLLM pool" not in asleep and asleep["vLLM asleep"] == 1.0 * GiB
    assert "vLLM asleep" not in awake and awake["vLLM pool"] == 0.4 * 80 * GiB


def test_ulysses_splits_the_activations_of_each_sequence(tmp_path: Path) -> None:
    """sp ranks share each sequence (64 + 64 tokens): a rank's activations are those of 64 of its tokens."""
    sets = ["trainer.n_gpus_per_node=2"]
    shape = ModelShape.from_config(read_model_config(str(TINY)))
    one = _lines(estimate(load_config(_config(tmp_path, TINY), sets).config, shape, 80 * GiB), "update")
    sets.append("actor_rollout_ref.actor.ulysses_sequence_parallel_size=2")
    two = _lines(estimate(load_config(_config(tmp_path, TINY), sets).config, shape, 80 * GiB), "update")
    assert two["activations"] == one["activations"] / 2 > 0


def test_context_parallel_splits_megatron_activations_and_logits_not_weights(tmp_path: Path) -> None:
    """cp ranks share each sequence (64 + 64 tokens) and compute the logits of their own positions: half the bf16
    logits of a micro-batch of 4; the fp32 response logits stay, as one rank may hold all 64 response positions.
    Each rank holds the whole model (tensor x pipeline split only); the distributed optimizer shards over both."""
    sets = ["backend=megatron", "trainer.n_gpus_per_node=2"]
    shape = ModelShape.from_config(read_model_config(str(TINY)))
    one = _lines(estimate(load_config(_config(tmp_path, TINY), sets).config, shape, 80 * GiB), "update")
    sets.append("actor_rollout_ref.actor.megatron.context_parallel_size=2")
    two = _lines(estimate(load_config(_config(tmp_path, TINY), sets).config, shape, 80 * GiB), "update")
    assert two["activations"] == one["activations"] / 2 > 0
    assert two["update logits"] == one["update logits"] - 4 * 64 * shape.vocab * 2
    for line in ("actor parameters", "actor gradient buffer", "actor optimizer"):
        assert two[line] == one[line] > 0, line


def test_lora_counts_adapter_state_and_no_reference(tmp_path: Path) -> None:
    """peft's adapters (all-linear, rank 8) trained one step: their weights, gradients and Adam moments."""
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(TINY, dtype=torch.float32),
                           LoraConfig(r=8, target_modules="all-linear"))
    trained = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trained, lr=1e-3)
    ids = torch.randint(0, 300, (2, 8))
    model(input_ids=ids, labels=ids).loss.backward()
    optimizer.step()
    nbytes = lambda tensors: sum(t.numel() * t.element_size() for t in tensors)  # noqa: E731
    moments = nbytes(t for state in optimizer.state.values() for k, t in state.items() if k != "step")

    config = load_config(_lora_config(tmp_path)).config
    update = _lines(estimate(config, ModelShape.from_config(read_model_config(str(TINY))), 80 * GiB), "update")
    assert (update["actor parameters"], update["actor gradients"], update["actor optimizer"]) == \
        (nbytes(model.parameters()), nbytes(p.grad for p in trained), moments)
    assert update["reference parameters"] == 0  # the actor's base with its adapters off


def _lora_config(tmp_path: Path) -> Path:
    path = _config(tmp_path, TINY)
    path.write_text(path.read_text().replace("enable_gradient_checkpointing: true",
                                             "enable_gradient_checkpointing: true, lora_rank: 8"))
    return path


def _rank(rank: int, port: int, out: Path) -> None:
    from torch.distributed.fsdp import fully_shard

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2,
                            timeout=timedelta(seconds=60))
    try:
        model = _model(ODD)
        for layer in model.model.layers:
            fully_shard(layer)
        fully_shard(model)
        local = sum(p.to_local().numel() for p in model.parameters())
        (out / f"rank{rank}.json").write_text(json.dumps(local))
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_fsdp2_shards_divide_as_the_estimate_says(tmp_path: Path) -> None:
    """FSDP2 gives rank 0 the first ceil(rows / world) rows of every tensor: the estimate's per-rank count."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.spawn(_rank, args=(port, tmp_path), nprocs=2, join=True)
    shape = ModelShape.from_config(ODD)
    rank0, rank1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert rank0 == shape.parameters(shards=2)
    assert rank0 + rank1 == shape.parameters()
    assert rank0 > shape.parameters() / 2  # the odd vocabulary makes FSDP's padding visible


def test_model_config_comes_from_the_hub_cache_without_network(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sha = "0123456789abcdef0123456789abcdef01234567"
    folder = tmp_path / "hub" / "models--org--tiny"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(sha)
    (folder / "snapshots" / sha).mkdir(parents=True)
    (folder / "snapshots" / sha / "config.json").write_text((TINY / "config.json").read_text())
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens: a network call would fail
    assert read_model_config("org/tiny")["vocab_size"] == 300
    assert read_model_config("org/tiny", "v2") is None  # a revision the cache does not hold


def _big_model(tmp_path: Path) -> Path:
    """A config.json of a Qwen2-1.5B-shaped model (no weights: the estimate needs none)."""
    folder = tmp_path / "qwen2-1.5b"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({
        "model_type": "qwen2", "vocab_size": 151936, "hidden_size": 1536, "intermediate_size": 8960,
        "num_hidden_layers": 28, "num_attention_heads": 12, "num_key_value_heads": 2, "tie_word_embeddings": True}))
    return folder


def test_validate_warns_and_launch_refuses_naming_changes_that_fit(tmp_path: Path) -> None:
    model = _big_model(tmp_path)
    cfg = _config(tmp_path, model, gpu_gb=48)
    cfg.write_text(cfg.read_text().replace("ppo_micro_batch_size_per_gpu: 4", "ppo_micro_batch_size_per_gpu: 32")
                   .replace("max_response_length: 64", "max_response_length: 1024"))
    result = CliRunner().invoke(app, ["validate", str(cfg)])
    assert result.exit_code == 0 and "warning" in result.output and "exceeds the GPU's 48.0 GiB" in result.output

    with pytest.raises(CompileError) as refused:
        prepare(LaunchRequest(cfg, run_dir=tmp_path / "run"))
    [diagnostic] = refused.value.diagnostics
    assert diagnostic.severity == "error" and "--force" in diagnostic.hint
    changes = [part.split(" (")[0].split("--set ")[1] for part in diagnostic.hint.split("; ") if "--set " in part]
    assert changes, diagnostic.hint
    for change in changes:  # each named change is a valid config that really fits by the estimate
        assert CliRunner().invoke(app, ["validate", str(cfg), "--set", change]).exit_code == 0, change
        fixed = load_config(cfg, [change]).config
        plan = estimate(fixed, ModelShape.from_config(read_model_config(str(model))), 48 * GiB)
        assert plan.peak()[1] <= 0.95 * 48 * GiB, change  # with the headroom the estimate's error needs
    plan, _, _ = prepare(LaunchRequest(cfg, run_dir=tmp_path / "forced", force=True))
    assert plan.memory.fits() is False


def test_plan_json_carries_the_estimate_and_cpu_runs_have_none(tmp_path: Path) -> None:
    plan, _, _ = prepare(LaunchRequest(_config(tmp_path, TINY), run_dir=tmp_path / "run", dry_run=True))
    written = json.loads((tmp_path / "run" / "plan.json").read_text())["memory"]
    assert written["peak"]["bytes"] == plan.memory.peak()[1] > 0.4 * 80 * GiB  # vLLM's pool is in the rollout peak
    assert written["kv_cache_tokens"] > 0
    cpu = _config(tmp_path, TINY, extra="")
    cpu.write_text(cpu.read_text().replace("device: cuda", "device: cpu"))
    assert prepare(LaunchRequest(cpu, run_dir=tmp_path / "cpu", dry_run=True))[0].memory is None


def test_a_config_without_a_shape_is_a_warning_not_a_crash(tmp_path: Path) -> None:
    folder = tmp_path / "odd"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "odd", "hidden_size": 64}))
    cfg = _config(tmp_path, folder, gpu_gb=48)
    result = CliRunner().invoke(app, ["validate", str(cfg)])
    assert result.exit_code == 0, result.output
    assert "its config.json has no vocab_size, num_attention_heads, num_hidden_layers" in result.output


def test_megatron_offload_counts_state_on_the_cpu_outside_its_phases(tmp_path: Path) -> None:
    """Megatron's actor on one GPU holds P bf16 weights (2P bytes), an fp32 gradient buffer (4P) and fp32 master
    weights with two Adam moments (12P); the reference 2P. Offloaded, none of it stays between phases: the rollout
    phase is 20P lighter, a log-prob pass brings back one model's weights, the update the actor's whole state."""
    shape = ModelShape.from_config(read_model_config(str(TINY)))
    p = shape.parameters()
    plain = load_config(_config(tmp_path, TINY, "backend: megatron")).config
    offload = ["actor_rollout_ref.actor.megatron.param_offload=true",
               "actor_rollout_ref.actor.megatron.optimizer_offload=true",
               "actor_rollout_ref.ref.megatron.param_offload=true"]
    moved = load_config(_config(tmp_path, TINY, "backend: megatron"), offload).config
    before, after = estimate(plain, shape, 80 * GiB), estimate(moved, shape, 80 * GiB)
    rollout = _lines(before, "rollout")
    assert (rollout["actor parameters"], rollout["actor gradient buffer"], rollout["actor optimizer"],
            rollout["reference parameters"]) == (2 * p, 4 * p, 12 * p, 2 * p)
    assert before.total("rollout") - after.total("rollout") == 20 * p
    assert _lines(after, "log_prob")["parameters (brought back)"] == 2 * p
    update = _lines(after, "update")
    assert (update["actor parameters (brought back)"], update["actor gradient buffer (brought back)"],
            update["actor optimizer (brought back)"]) == (2 * p, 4 * p, 12 * p)


def test_megatron_expert_parallelism_splits_the_experts_not_the_dense_layers(tmp_path: Path) -> None:
    """Qwen3-MoE on 2 GPUs at tensor 1 x expert 2: each rank holds every dense tensor and half the experts; the
    distributed optimizer shards the dense part over the 2 data-parallel ranks and the experts over their 1."""
    hf = AutoConfig.for_model(**FAMILIES["qwen3-moe"])
    model = AutoModelForCausalLM.from_config(hf)
    experts = sum(p.numel() for n, p in model.named_parameters() if ".mlp.experts." in n)
    dense = sum(p.numel() for p in model.parameters()) - experts
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text(json.dumps(FAMILIES["qwen3-moe"]))
    extra = "backend: megatron\n" + "trainer: {device: cuda, n_gpus_per_node: 2, gpu_memory_gb: 80}\n"
    path = _config(tmp_path, tmp_path / "model", extra)
    path.write_text(path.read_text().replace("trainer: {device: cuda, n_gpus_per_node: 1, gpu_memory_gb: 80}\n", "")
                    .replace("use_kl_loss: true}", "use_kl_loss: true, megatron: {expert_model_parallel_size: 2}}"))
    config = load_config(path).config
    update = _lines(estimate(config, ModelShape.from_config(FAMILIES["qwen3-moe"]), 80 * GiB), "update")
    assert update["actor parameters"] == 2 * (dense + experts / 2)
    assert update["actor optimizer"] == pytest.approx(12 * (dense / 2 + experts / 2))
