"""Hugging Face <-> megatron-core weight conversion for tiny Llama, Qwen2, Qwen3, Mistral and Qwen MoE models, on CPU.

The conversion is checked against real megatron-core `GPTModel`s (local spec) built in two spawned gloo processes:
tensor parallel 1 and 2 and pipeline parallel 2. Each shard must load into its model with no missing, unexpected
or mis-shaped tensor; the models' forward must give the Hugging Face logits; and the weights read back out of the
models must convert to the original Hugging Face tensors exactly. The MoE conversion (sharded over expert parallel
and expert-tensor-parallel ranks) is checked as pure functions here; `test_megatron_moe` runs it in the engine.

megatron-core's forward asks CUDA for a device and an RNG state, which cannot exist on this machine; inside the
spawned workers (never in the pytest process) `torch.cuda.current_device` answers "cpu" and the RNG tracker's
`fork` does nothing (dropout is 0, so it has nothing to seed). Everything else is megatron-core as shipped.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import (
    GPT2Config,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    PretrainedConfig,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen2MoeConfig,
    Qwen2MoeForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
    Qwen3MoeConfig,
    Qwen3MoeForCausalLM,
)

from rlc.megatron_arch import (
    SUPPORTED_ARCHITECTURES,
    attention_window,
    padded_vocab_size,
    unsupported_reasons,
)
from rlc_runtime.engines.megatron_convert import (
    _from_hybrid_key,
    _to_hybrid_key,
    hf_to_megatron,
    iter_megatron_to_hf,
    megatron_to_hf,
    merge_expert_parallel,
    merge_pipeline_stages,
)

VOCAB = 1100  # padded to 1152 at TP 1 and 1280 at TP 2
SMALL = dict(vocab_size=VOCAB, hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, rms_norm_eps=1e-6)
FAMILIES = ("llama", "qwen2", "mistral", "qwen3")
IDS = torch.tensor([[3, 17, 99, 1024, 5, 700, 42, 8, 1099, 0, 64, 12],
                    [250, 251, 252, 1, 2, 3, 900, 901, 4, 5, 6, 7]])


def tiny_hf(family: str) -> tuple[PretrainedConfig, torch.nn.Module]:
    """A deterministic tiny model: GQA everywhere; llama3 rope scaling (Llama), q/k/v biases and tied embeddings
    (Qwen2), head_dim 48 != hidden/heads and linear rope scaling (Mistral), q/k norms and head_dim 48 (Qwen3).
    Every tensor is random, so a swapped or misplaced block cannot pass."""
    if family == "llama":
        config = LlamaConfig(**SMALL, max_position_embeddings=16384, rope_theta=500000.0,
                             rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                           "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
                             architectures=["LlamaForCausalLM"])
        cls = LlamaForCausalLM
    elif family == "qwen2":
        config = Qwen2Config(**SMALL, max_position_embeddings=256, rope_theta=1e6, tie_word_embeddings=True,
                             architectures=["Qwen2ForCausalLM"])
        cls = Qwen2ForCausalLM
    elif family == "qwen3":
        config = Qwen3Config(**SMALL, head_dim=48, max_position_embeddings=256, rope_theta=1e6,
                             tie_word_embeddings=False, architectures=["Qwen3ForCausalLM"])
        cls = Qwen3ForCausalLM
    else:
        config = MistralConfig(**SMALL, head_dim=48, max_position_embeddings=256, sliding_window=None,
                               rope_scaling={"rope_type": "linear", "factor": 2.0},
                               architectures=["MistralForCausalLM"])
        cls = MistralForCausalLM
    torch.manual_seed(FAMILIES.index(family))
    model = cls(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.randn_like(p) * 0.05 + ("norm" in name))
    return config, model


def expected_hf(config: PretrainedConfig, model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """What the round trip must return: the state dict, without the tied `lm_head.weight` alias."""
    state = model.state_dict()
    if config.tie_word_embeddings:
        state.pop("lm_head.weight")
    return state


def assert_same(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert list(got) == list(want) or sorted(got) == sorted(want)
    for name, t in want.items():
        assert torch.equal(got[name], t), name


# --- in the spawned workers -----------------------------------------------------------------------------------


@contextlib.contextmanager
def cpu_megatron():
    """See the module docstring: the two CUDA-only calls megatron-core's forward makes, answered on CPU."""
    from megatron.core import tensor_parallel

    class NoRngTracker:
        def fork(self, *args: Any, **kwargs: Any) -> contextlib.AbstractContextManager:
            return contextlib.nullcontext()

    saved = torch.cuda.current_device, tensor_parallel.get_cuda_rng_tracker
    torch.cuda.current_device = lambda: "cpu"
    tensor_parallel.get_cuda_rng_tracker = NoRngTracker
    try:
        yield
    finally:
        torch.cuda.current_device, tensor_parallel.get_cuda_rng_tracker = saved


def _tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)}


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    warnings.filterwarnings("ignore")
    import torch.distributed as dist
    from megatron.core import parallel_state

    from rlc_runtime.engines.megatron_model import build_model, load_shard

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", world_size=world, rank=rank)
    results: dict[str, Any] = {}
    causal = torch.triu(torch.ones(IDS.shape[1], IDS.shape[1], dtype=torch.bool), 1)[None, None]
    positions = torch.arange(IDS.shape[1]).expand_as(IDS)
    for tp, pp in ((1, 1), (2, 1), (1, 2)):
        parallel_state.initialize_model_parallel(tensor_model_parallel_size=tp, pipeline_model_parallel_size=pp)
        tp_rank = parallel_state.get_tensor_model_parallel_rank()
        pp_rank = parallel_state.get_pipeline_model_parallel_rank()
        for family in FAMILIES:
            config, hf = tiny_hf(family)
            if pp > 1 and config.tie_word_embeddings:
                continue  # megatron syncs a later stage's copy of tied embeddings with `.cuda()` at construction
            model = build_model(config, tp, pp, torch.float32, use_cpu_initialization=True).eval()
            load_shard(model, hf_to_megatron(hf.state_dict(), config, tp, tp_rank, pp_size=pp, pp_rank=pp_rank))
            entry: dict[str, Any] = {"weights": _tensors(model)}
            if pp == 1:
                with cpu_megatron(), torch.no_grad():
                    entry["logits"] = model(IDS, positions, causal)  # this rank's vocabulary slice
            results[f"{family}/tp{tp}/pp{pp}"] = entry
        parallel_state.destroy_model_parallel()
    torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.barrier()  # a rank that leaves while gloo still talks to it aborts (SIGABRT)
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def megatron_runs(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """Both ranks' loaded weights and logits for every family at (TP, PP) = (1, 1), (2, 1), (1, 2)."""
    out = tmp_path_factory.mktemp("megatron")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.multiprocessing.spawn(_worker, args=(2, port, str(out)), nprocs=2, join=True)
    return [torch.load(out / f"rank{r}.pt") for r in range(2)]


# --- against real megatron-core models ------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_megatron_logits_equal_hugging_face_at_tp1_and_tp2(family: str, megatron_runs: list[dict[str, Any]]) -> None:
    config, hf = tiny_hf(family)
    with torch.no_grad():
        want = hf(IDS).logits
    tp1 = megatron_runs[0][f"{family}/tp1/pp1"]["logits"]
    assert tp1.shape[-1] == padded_vocab_size(VOCAB, 1) == 1152
    torch.testing.assert_close(tp1[..., :VOCAB], want, atol=1e-5, rtol=1e-4)
    assert torch.all(tp1[..., VOCAB:] == 0)  # zero-padded rows give logit 0: the loss must mask them
    tp2 = torch.cat([megatron_runs[r][f"{family}/tp2/pp1"]["logits"] for r in range(2)], dim=-1)
    assert tp2.shape[-1] == padded_vocab_size(VOCAB, 2) == 1280
    torch.testing.assert_close(tp2[..., :VOCAB], want, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("family", FAMILIES)
def test_round_trip_through_megatron_models_is_exact(family: str, megatron_runs: list[dict[str, Any]]) -> None:
    config, hf = tiny_hf(family)
    want = expected_hf(config, hf)
    assert_same(megatron_to_hf([megatron_runs[0][f"{family}/tp1/pp1"]["weights"]], config), want)
    tp2 = [megatron_runs[r][f"{family}/tp2/pp1"]["weights"] for r in range(2)]
    assert_same(megatron_to_hf(tp2, config), want)
    if config.tie_word_embeddings:  # not built on CPU (see _worker): the converter's stages, checked by hand
        stages = [hf_to_megatron(hf.state_dict(), config, pp_size=2, pp_rank=r) for r in range(2)]
        assert torch.equal(stages[1]["output_layer.weight"], stages[0]["embedding.word_embeddings.weight"])
        assert set(stages[0]) - {"embedding.word_embeddings.weight"} == {
            k.replace(".1.", ".0.") for k in stages[1]} - {"decoder.final_layernorm.weight", "output_layer.weight"}
    else:
        stages = [megatron_runs[r][f"{family}/tp1/pp2"]["weights"] for r in range(2)]
    assert_same(megatron_to_hf([merge_pipeline_stages(stages, config)], config), want)


def test_tied_embeddings_have_no_output_layer(megatron_runs: list[dict[str, Any]]) -> None:
    assert "output_layer.weight" not in megatron_runs[0]["qwen2/tp1/pp1"]["weights"]
    assert "output_layer.weight" in megatron_runs[0]["llama/tp1/pp1"]["weights"]


# --- the layouts themselves, without megatron -----------------------------------------------------------------


def test_fused_layouts_follow_megatron_query_groups_and_gate_up_split() -> None:
    # 4 query heads in 2 groups, head_dim 1, hidden 1: every row is identifiable by its value.
    config = LlamaConfig(vocab_size=4, hidden_size=4, intermediate_size=4, num_hidden_layers=1, num_attention_heads=4,
                         num_key_value_heads=2, head_dim=1)
    col = torch.arange(4.0)[:, None].expand(4, 4)
    layer = {"input_layernorm.weight": torch.ones(4), "post_attention_layernorm.weight": torch.ones(4),
             "self_attn.q_proj.weight": col, "self_attn.k_proj.weight": 10 + col[:2],
             "self_attn.v_proj.weight": 20 + col[:2], "self_attn.o_proj.weight": col.T,
             "mlp.gate_proj.weight": col, "mlp.up_proj.weight": 10 + col, "mlp.down_proj.weight": col.T}
    hf = {"model.embed_tokens.weight": torch.zeros(4, 4), "model.norm.weight": torch.ones(4),
          "lm_head.weight": torch.zeros(4, 4), **{f"model.layers.0.{k}": v for k, v in layer.items()}}
    rows = [hf_to_megatron(hf, config, 2, r)["decoder.layers.0.self_attention.linear_qkv.weight"][:, 0].tolist()
            for r in range(2)]
    assert rows == [[0, 1, 10, 20], [2, 3, 11, 21]]
    fc1 = [hf_to_megatron(hf, config, 2, r)["decoder.layers.0.mlp.linear_fc1.weight"][:, 0].tolist() for r in range(2)]
    assert fc1 == [[0, 1, 10, 11], [2, 3, 12, 13]]
    proj = hf_to_megatron(hf, config, 2, 1)["decoder.layers.0.self_attention.linear_proj.weight"]
    assert proj[0].tolist() == [2, 3]
    assert hf_to_megatron(hf, config, 1, 0)["output_layer.weight"].shape == (128, 4)
    with pytest.raises(ValueError, match="tensor parallel size 4 must divide the 2 kv heads"):
        hf_to_megatron(hf, config, 4, 0)


@pytest.mark.parametrize("family", FAMILIES)
def test_streamed_export_yields_hugging_face_order_one_tensor_at_a_time(family: str) -> None:
    config, hf = tiny_hf(family)
    shards = [hf_to_megatron(hf.state_dict(), config, 2, r) for r in range(2)]
    stream = iter_megatron_to_hf(shards, config)
    first_name, _ = next(stream)  # a generator: nothing else has been assembled yet
    names = [first_name] + [name for name, _ in stream]
    assert names == list(expected_hf(config, hf))


@pytest.mark.parametrize("family", ("llama", "qwen2", "mistral"))  # the HybridModel builder refuses q/k norms
def test_hybrid_layout_round_trip(family: str) -> None:
    config, hf = tiny_hf(family)
    shards = [hf_to_megatron(hf.state_dict(), config, 2, r, layout="hybrid") for r in range(2)]
    keys = set(shards[0])
    assert {"decoder.layers.0.self_attention.linear_qkv.layer_norm_weight", "decoder.layers.1.mlp.linear_fc1.weight",
            "decoder.layers.3.mlp.linear_fc1.layer_norm_weight", "decoder.final_norm.weight"} <= keys
    assert not any("layernorm" in k for k in keys)
    assert all(_to_hybrid_key(_from_hybrid_key(k)) == k for k in keys)
    assert_same(megatron_to_hf(shards, config, layout="hybrid"), expected_hf(config, hf))


# --- mixture of experts, as pure functions --------------------------------------------------------------------


def tiny_moe(family: str) -> tuple[PretrainedConfig, torch.nn.Module]:
    common = dict(vocab_size=300, hidden_size=64, moe_intermediate_size=32, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=16, num_experts=4, num_experts_per_tok=2, max_position_embeddings=64)
    torch.manual_seed(11)
    if family == "qwen3_moe":
        model = Qwen3MoeForCausalLM(Qwen3MoeConfig(**common, norm_topk_prob=True))
    else:
        config = Qwen2MoeConfig(**common, shared_expert_intermediate_size=48, tie_word_embeddings=True)
        model = Qwen2MoeForCausalLM(config)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p))
    return model.config, model


@pytest.mark.parametrize("family", ("qwen3_moe", "qwen2_moe"))
@pytest.mark.parametrize(("tp", "ep", "etp"), ((1, 2, 1), (2, 2, 1), (2, 1, 2), (2, 4, 2)))
def test_moe_round_trip_over_expert_and_tensor_parallel_ranks_is_exact(family: str, tp: int, ep: int,
                                                                       etp: int) -> None:
    config, hf = tiny_moe(family)
    state = hf.state_dict()
    # rank = (tp_rank, ep_rank); the expert-tensor rank is the tensor rank's position within its expert group
    shards = [[hf_to_megatron(state, config, tp, t, ep_size=ep, ep_rank=e, etp_size=etp, etp_rank=t % etp)
               for e in range(ep)] for t in range(tp)]
    local = shards[0][0]
    assert sum(".experts.local_experts." in k and k.endswith("fc1.weight") for k in local) == 2 * 4 // ep
    got = megatron_to_hf([merge_expert_parallel(by_ep, config) for by_ep in shards], config, expert_tp_size=etp)
    assert_same(got, expected_hf(config, hf))
    assert list(got) == list(expected_hf(config, hf))  # transformers' order, router first only for Qwen2-MoE


def test_moe_expert_layout_is_megatron_sequential_mlp() -> None:
    config, hf = tiny_moe("qwen2_moe")
    state = hf.state_dict()
    gate_up, down = state["model.layers.1.mlp.experts.gate_up_proj"], state["model.layers.1.mlp.experts.down_proj"]
    shard = hf_to_megatron(state, config, 2, 1, ep_size=2, ep_rank=1, etp_size=2, etp_rank=1)
    fc1 = shard["decoder.layers.1.mlp.experts.local_experts.0.linear_fc1.weight"]  # global expert 2, ETP rank 1
    assert torch.equal(fc1, torch.cat([gate_up[2, 16:32], gate_up[2, 48:64]]))
    fc2 = shard["decoder.layers.1.mlp.experts.local_experts.1.linear_fc2.weight"]  # global expert 3
    assert torch.equal(fc2, down[3][:, 16:32])
    assert torch.equal(shard["decoder.layers.1.mlp.router.weight"], state["model.layers.1.mlp.gate.weight"])
    assert torch.equal(shard["decoder.layers.1.mlp.shared_experts.gate_weight"],
                       state["model.layers.1.mlp.shared_expert_gate.weight"])
    assert shard["decoder.layers.1.mlp.shared_experts.linear_fc1.weight"].shape == (48, 64)  # 2 x 48 / TP 2
    with pytest.raises(ValueError, match="expert parallel size 3 must divide the 4 experts"):
        hf_to_megatron(state, config, ep_size=3)


# --- what is refused ------------------------------------------------------------------------------------------


def test_unsupported_architecture_is_refused_naming_the_supported_ones() -> None:
    from rlc_runtime.engines.megatron_model import UnsupportedModelError, check_supported

    with pytest.raises(UnsupportedModelError) as err:
        check_supported(GPT2Config(architectures=["GPT2LMHeadModel"]))
    message = str(err.value)
    assert "GPT2LMHeadModel" in message and all(a in message for a in SUPPORTED_ARCHITECTURES)


def test_unsupported_settings_are_each_named() -> None:
    base = {"architectures": ["LlamaForCausalLM"], "num_attention_heads": 4, "num_key_value_heads": 2,
            "num_hidden_layers": 2}
    assert unsupported_reasons(base, tp_size=2, pp_size=2) == []
    assert "yarn" in unsupported_reasons({**base, "rope_scaling": {"type": "yarn", "factor": 4.0}})[0]
    assert "low_freq_factor" in unsupported_reasons(
        {**base, "rope_parameters": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 2.0}})[0]
    assert "tensor parallel size 4" in unsupported_reasons(base, tp_size=4)[0]
    assert "gelu" in unsupported_reasons({**base, "hidden_act": "gelu"})[0]
    assert "bias" in unsupported_reasons({**base, "attention_bias": True})[0]
    assert "intermediate_size" in unsupported_reasons({**base, "intermediate_size": 3}, tp_size=2)[0]
    assert unsupported_reasons({"model_type": "qwen2", **{k: v for k, v in base.items() if k != "architectures"}}) == []


def test_moe_settings_are_each_named() -> None:
    moe = {"architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe", "num_attention_heads": 4,
           "num_key_value_heads": 2, "num_hidden_layers": 2, "num_experts": 8, "moe_intermediate_size": 64,
           "intermediate_size": 6}
    assert unsupported_reasons(moe, ep_size=4) == []  # intermediate_size (6) is a dense MLP's: unused
    assert "needs megatron sequence parallelism" in unsupported_reasons(moe, tp_size=2)[0]
    assert unsupported_reasons({**moe, "num_experts": None, "num_local_experts": 8}, ep_size=8) == []
    assert "expert parallel size 3 must divide num_experts (8)" in unsupported_reasons(moe, ep_size=3)[0]
    assert "moe_intermediate_size" in unsupported_reasons({**moe, "moe_intermediate_size": 63}, etp_size=2)[0]
    assert "mlp_only_layers" in unsupported_reasons({**moe, "mlp_only_layers": [0]})[0]
    assert "decoder_sparse_step" in unsupported_reasons({**moe, "decoder_sparse_step": 2})[0]
    assert "dense" in unsupported_reasons({"architectures": ["Qwen3ForCausalLM"], "num_attention_heads": 4},
                                          ep_size=2)[0]
    shared = {**moe, "architectures": ["Qwen2MoeForCausalLM"], "model_type": "qwen2_moe",
              "shared_expert_intermediate_size": 33}
    assert "shared_expert_intermediate_size" in unsupported_reasons(shared, tp_size=2)[1]


def test_attention_window_bounds_the_sequence_length_only_where_sliding_attention_is_on() -> None:
    assert attention_window(MistralConfig(sliding_window=4096).to_dict()) == 4096
    assert attention_window(MistralConfig(sliding_window=None).to_dict()) is None
    assert attention_window(Qwen2Config(sliding_window=4096, use_sliding_window=False).to_dict()) is None
    assert attention_window(Qwen2Config(sliding_window=4096, use_sliding_window=True).to_dict()) == 4096


def test_arch_rules_import_without_torch() -> None:
    code = ("import sys, rlc.megatron_arch as m; assert 'torch' not in sys.modules; "
            "print(m.SUPPORTED_ARCHITECTURES)")
    root = Path(__file__).parents[3]
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root)
    assert done.returncode == 0, done.stderr
    assert "Qwen2ForCausalLM" in done.stdout
