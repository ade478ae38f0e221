"""Weights between Hugging Face (Llama, Qwen2/3, Mistral, Qwen2/3-MoE) and megatron-core, one shard at a time.

Pure functions on state dicts, so the same code serves loading a checkpoint, the vLLM weight sync and the HF
export, and tests run on CPU without building anything distributed. The megatron side uses the parameter names of
`GPTModel` built with `get_gpt_layer_local_spec` (what `megatron_model.build_model` builds when Transformer Engine
is absent, as on our GPU host): separate `input_layernorm`/`pre_mlp_layernorm` modules. With Transformer Engine the
builder uses `HybridModel`, whose stack splits each GPT layer into an attention layer and an MLP layer and fuses
the norms into the following linear layer; `layout="hybrid"` renames keys to that form (`_to_hybrid_key`).

Layouts megatron-core expects (per TP rank r of T):
- `linear_qkv`: rows grouped by query group, each group `[q heads of the group, k, v]`; rank r holds the groups
  `[r*G/T, (r+1)*G/T)` (so GQA needs T to divide the number of kv heads). Qwen2's q/k/v biases follow the same.
- `linear_fc1`: `[gate_r; up_r]`: gate and up are each split by rank, then concatenated (column parallel, SwiGLU).
- `linear_proj`, `linear_fc2`: row parallel, split on dim 1.
- word embeddings / output layer: vocab parallel, split on dim 0 after zero-padding the vocabulary to a multiple of
  `make_vocab_size_divisible_by * T` (megatron's rule). Padded logits are 0, not -inf: the loss must ignore them.
- Qwen3's q/k norms (`self_attention.{q,k}_layernorm`, per head) are replicated, as are all other norms.
- MoE layers (the local spec's `SequentialMLP`): the router (`mlp.router.weight`, HF `mlp.gate.weight`) is
  replicated; expert e's `linear_fc1`/`linear_fc2` is a plain SwiGLU MLP taken from transformers' fused
  `mlp.experts.gate_up_proj[e]` (gate rows then up rows) and `mlp.experts.down_proj[e]`, split over the
  expert-tensor-parallel ranks as a dense MLP over TP. Expert-parallel rank p of P holds experts
  `[p*E/P, (p+1)*E/P)` as `local_experts.0..E/P-1`. Qwen2-MoE's shared expert (`mlp.shared_experts`) is a dense
  MLP over TP with its sigmoid gate (`gate_weight`, HF `shared_expert_gate.weight`) replicated.
- Tied embeddings: no `output_layer.weight`, except on the last pipeline stage when PP > 1,
  which holds its own copy of the embedding (megatron keeps the two in sync through the embedding group).
Going back, the vocabulary padding is removed and a tied `lm_head.weight` is left out, as `save_pretrained` and
vLLM's weight loader expect.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from rlc.megatron_arch import MAKE_VOCAB_SIZE_DIVISIBLE_BY, num_experts, padded_vocab_size, qk_layernorm

StateDict = dict[str, torch.Tensor]
Layout = Literal["gpt", "hybrid"]

_EMBED, _OUTPUT = "embedding.word_embeddings.weight", "output_layer.weight"
_FINAL_NORM = "decoder.final_layernorm.weight"
# (megatron suffix within decoder.layers.N, HF suffix within model.layers.N) for tensors copied or split simply.
_NORMS = (("input_layernorm.weight", "input_layernorm.weight"),
          ("pre_mlp_layernorm.weight", "post_attention_layernorm.weight"))
_PROJ = ("self_attention.linear_proj.weight", "self_attn.o_proj.weight")  # row parallel


_QK_NORMS = (("self_attention.q_layernorm.weight", "self_attn.q_norm.weight"),
             ("self_attention.k_layernorm.weight", "self_attn.k_norm.weight"))
_EXPERT = "mlp.experts.local_experts.{}.linear_fc{}.weight"
_SHARED = "mlp.shared_experts."


@dataclass(frozen=True)
class _Dims:
    heads: int
    groups: int
    head_dim: int
    layers: int
    vocab: int
    tied: bool
    experts: int = 0
    shared_expert: bool = False
    qk_norm: bool = False
    model_type: str = ""

    @property
    def heads_per_group(self) -> int:
        return self.heads // self.groups


def _dims(hf_config: Any) -> _Dims:
    heads = hf_config.num_attention_heads
    raw = hf_config.to_dict()
    return _Dims(heads=heads, groups=getattr(hf_config, "num_key_value_heads", None) or heads,
                 head_dim=getattr(hf_config, "head_dim", None) or hf_config.hidden_size // heads,
                 layers=hf_config.num_hidden_layers, vocab=hf_config.vocab_size,
                 tied=bool(getattr(hf_config, "tie_word_embeddings", False)), experts=num_experts(raw),
                 shared_expert=bool(raw.get("shared_expert_intermediate_size")) and raw["model_type"] == "qwen2_moe",
                 qk_norm=qk_layernorm(raw), model_type=raw.get("model_type", ""))


def _shard(t: torch.Tensor, tp_size: int, tp_rank: int, dim: int = 0) -> torch.Tensor:
    # A contiguous copy, so the caller can free the full Hugging Face tensors once its shard is built.
    return t.chunk(tp_size, dim=dim)[tp_rank].clone(memory_format=torch.contiguous_format)


def _qkv_shard(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, d: _Dims, tp_size: int, tp_rank: int):
    rest = q.shape[1:]  # (hidden,) for weights, () for biases
    grouped = torch.cat([q.reshape(d.groups, d.heads_per_group * d.head_dim, *rest),
                         k.reshape(d.groups, d.head_dim, *rest),
                         v.reshape(d.groups, d.head_dim, *rest)], dim=1)
    return _shard(grouped, tp_size, tp_rank).reshape(-1, *rest)


def _vocab_shard(t: torch.Tensor, tp_size: int, tp_rank: int, divisible_by: int) -> torch.Tensor:
    padded = t.new_zeros(padded_vocab_size(t.shape[0], tp_size, divisible_by), t.shape[1])
    padded[: t.shape[0]] = t
    return _shard(padded, tp_size, tp_rank)


def hf_to_megatron(hf_state: Mapping[str, torch.Tensor], hf_config: Any, tp_size: int = 1, tp_rank: int = 0, *,
                   pp_size: int = 1, pp_rank: int = 0, ep_size: int = 1, ep_rank: int = 0,
                   etp_size: int | None = None, etp_rank: int | None = None, layout: Layout = "gpt",
                   make_vocab_size_divisible_by: int = MAKE_VOCAB_SIZE_DIVISIBLE_BY) -> StateDict:
    """The megatron-core state dict of one (TP rank, PP stage, EP rank, expert-TP rank) from a full Hugging Face
    state dict. Expert-tensor parallelism defaults to the tensor-parallel size and rank, as in megatron.

    Pipeline stages hold `num_hidden_layers / pp_size` consecutive layers, numbered from 0 within the stage.
    """
    d = _dims(hf_config)
    if d.groups % tp_size or d.layers % pp_size:
        raise ValueError(f"tensor parallel size {tp_size} must divide the {d.groups} kv heads and pipeline parallel "
                         f"size {pp_size} the {d.layers} layers")
    if d.experts % ep_size:
        raise ValueError(f"expert parallel size {ep_size} must divide the {d.experts} experts")
    experts = _ExpertShard(ep_size, ep_rank, tp_size if etp_size is None else etp_size,
                           tp_rank if etp_rank is None else etp_rank)
    per_stage = d.layers // pp_size
    out: StateDict = {}
    embed = hf_state["model.embed_tokens.weight"]
    if pp_rank == 0:
        out[_EMBED] = _vocab_shard(embed, tp_size, tp_rank, make_vocab_size_divisible_by)
    for local in range(per_stage):
        hf, mg = f"model.layers.{pp_rank * per_stage + local}.", f"decoder.layers.{local}."
        for mg_name, hf_name in _NORMS:
            out[mg + mg_name] = hf_state[hf + hf_name].clone()
        out[mg + _PROJ[0]] = _shard(hf_state[hf + _PROJ[1]], tp_size, tp_rank, dim=1)
        for kind in ("weight", "bias"):
            if f"{hf}self_attn.q_proj.{kind}" in hf_state:
                q, k, v = (hf_state[f"{hf}self_attn.{p}_proj.{kind}"] for p in "qkv")
                out[f"{mg}self_attention.linear_qkv.{kind}"] = _qkv_shard(q, k, v, d, tp_size, tp_rank)
        if d.qk_norm:
            for mg_name, hf_name in _QK_NORMS:
                out[mg + mg_name] = hf_state[hf + hf_name].clone()
        if d.experts:
            out.update(_moe_layer(hf_state, hf, mg, d, tp_size, tp_rank, experts))
        else:
            out.update(_mlp(hf_state, f"{hf}mlp.", f"{mg}mlp.", tp_size, tp_rank))
    if pp_rank == pp_size - 1:
        out[_FINAL_NORM] = hf_state["model.norm.weight"].clone()
        if not d.tied or pp_size > 1:
            head = embed if d.tied else hf_state["lm_head.weight"]
            out[_OUTPUT] = _vocab_shard(head, tp_size, tp_rank, make_vocab_size_divisible_by)
    return {_to_hybrid_key(k): v for k, v in out.items()} if layout == "hybrid" else out


@dataclass(frozen=True)
class _ExpertShard:
    ep_size: int
    ep_rank: int
    etp_size: int
    etp_rank: int


def _fc1(gate: torch.Tensor, up: torch.Tensor, size: int, rank: int) -> torch.Tensor:
    """SwiGLU's fused first projection of one tensor-parallel rank: `[gate_r; up_r]`."""
    return torch.cat([_shard(gate, size, rank), _shard(up, size, rank)])


def _mlp(hf_state: Mapping[str, torch.Tensor], hf: str, mg: str, size: int, rank: int) -> StateDict:
    """A dense SwiGLU MLP (`hf` holds gate/up/down_proj, `mg` linear_fc1/fc2) split over `size` ranks."""
    return {mg + "linear_fc1.weight": _fc1(hf_state[hf + "gate_proj.weight"], hf_state[hf + "up_proj.weight"],
                                           size, rank),
            mg + "linear_fc2.weight": _shard(hf_state[hf + "down_proj.weight"], size, rank, dim=1)}


def _moe_layer(hf_state: Mapping[str, torch.Tensor], hf: str, mg: str, d: _Dims, tp_size: int, tp_rank: int,
               ex: _ExpertShard) -> StateDict:
    out = {mg + "mlp.router.weight": hf_state[hf + "mlp.gate.weight"].clone()}
    gate_up, down = hf_state[hf + "mlp.experts.gate_up_proj"], hf_state[hf + "mlp.experts.down_proj"]
    local = d.experts // ex.ep_size
    for i in range(local):
        e = ex.ep_rank * local + i
        out[mg + _EXPERT.format(i, 1)] = _fc1(*gate_up[e].chunk(2), ex.etp_size, ex.etp_rank)
        out[mg + _EXPERT.format(i, 2)] = _shard(down[e], ex.etp_size, ex.etp_rank, dim=1)
    if d.shared_expert:
        out.update(_mlp(hf_state, hf + "mlp.shared_expert.", mg + _SHARED, tp_size, tp_rank))
        out[mg + _SHARED + "gate_weight"] = hf_state[hf + "mlp.shared_expert_gate.weight"].clone()
    return out


def iter_megatron_to_hf(shards: Sequence[Mapping[str, torch.Tensor]], hf_config: Any, *,
                        layout: Layout = "gpt", expert_tp_size: int | None = None
                        ) -> Iterator[tuple[str, torch.Tensor]]:
    """Hugging Face (name, tensor) pairs, one at a time, from the TP shards (rank order) of a whole model.

    Each tensor is assembled only when reached, so a caller streaming to vLLM or to safetensors files holds one
    full tensor at a time. Tensors may share storage with `shards` (norms, TP 1): copy before mutating.
    Pipeline stages must first be joined with `merge_pipeline_stages`, expert-parallel ranks with
    `merge_expert_parallel` (experts then carry their global numbers). Expert weights are read from the first
    `expert_tp_size` shards (default: all), the pieces of the expert-tensor-parallel ranks in rank order.
    """
    if layout == "hybrid":
        shards = [{_from_hybrid_key(k): v for k, v in s.items()} for s in shards]
    d = _dims(hf_config)
    first = shards[0]

    def cat(name: str, dim: int = 0) -> torch.Tensor:
        return torch.cat([s[name] for s in shards], dim=dim)

    yield "model.embed_tokens.weight", cat(_EMBED)[: d.vocab]
    for i in range(d.layers):  # in the order of the Hugging Face modules' state dict
        hf, mg = f"model.layers.{i}.", f"decoder.layers.{i}."
        kinds = [k for k in ("weight", "bias") if f"{mg}self_attention.linear_qkv.{k}" in first]
        parts = {k: _split_qkv(cat(f"{mg}self_attention.linear_qkv.{k}"), d) for k in kinds}
        for p, proj in enumerate("qkv"):
            for k in kinds:
                yield f"{hf}self_attn.{proj}_proj.{k}", parts[k][p]
        yield hf + _PROJ[1], cat(mg + _PROJ[0], dim=1)
        if d.qk_norm:
            for mg_name, hf_name in _QK_NORMS:
                yield hf + hf_name, first[mg + mg_name]
        if d.experts:
            yield from _moe_to_hf(shards, hf, mg, d, expert_tp_size or len(shards))
        else:
            yield from _mlp_to_hf(shards, f"{hf}mlp.", f"{mg}mlp.")
        for mg_name, hf_name in _NORMS:
            yield hf + hf_name, first[mg + mg_name]
    yield "model.norm.weight", first[_FINAL_NORM]
    if not d.tied:
        yield "lm_head.weight", cat(_OUTPUT)[: d.vocab]


def _mlp_to_hf(shards: Sequence[Mapping[str, torch.Tensor]], hf: str, mg: str) -> Iterator[tuple[str, torch.Tensor]]:
    gates, ups = zip(*(s[mg + "linear_fc1.weight"].chunk(2) for s in shards), strict=True)
    yield hf + "gate_proj.weight", torch.cat(gates)
    yield hf + "up_proj.weight", torch.cat(ups)
    yield hf + "down_proj.weight", torch.cat([s[mg + "linear_fc2.weight"] for s in shards], dim=1)


def _moe_to_hf(shards: Sequence[Mapping[str, torch.Tensor]], hf: str, mg: str, d: _Dims,
               etp: int) -> Iterator[tuple[str, torch.Tensor]]:
    """One MoE layer in the order of transformers' modules: Qwen2-MoE declares its router first and ends with the
    shared expert, Qwen3-MoE declares its experts first."""
    pieces = [shards[r] for r in range(etp)]

    def experts() -> Iterator[tuple[str, torch.Tensor]]:
        fc1 = [[s[mg + _EXPERT.format(e, 1)].chunk(2) for s in pieces] for e in range(d.experts)]
        yield hf + "mlp.experts.gate_up_proj", torch.stack(
            [torch.cat([g for g, _ in ranks] + [u for _, u in ranks]) for ranks in fc1])
        del fc1
        yield hf + "mlp.experts.down_proj", torch.stack(
            [torch.cat([s[mg + _EXPERT.format(e, 2)] for s in pieces], dim=1) for e in range(d.experts)])

    router = (hf + "mlp.gate.weight", shards[0][mg + "mlp.router.weight"])
    if d.model_type == "qwen3_moe":
        yield from experts()
        yield router
        return
    yield router
    yield from experts()
    if d.shared_expert:
        yield from _mlp_to_hf(shards, hf + "mlp.shared_expert.", mg + _SHARED)
        yield hf + "mlp.shared_expert_gate.weight", shards[0][mg + _SHARED + "gate_weight"]


def _split_qkv(fused: torch.Tensor, d: _Dims) -> tuple[torch.Tensor, ...]:
    """q, k, v (weights or biases) from megatron's grouped [q heads of the group, k, v] rows."""
    rest = fused.shape[1:]
    grouped = fused.reshape(d.groups, (d.heads_per_group + 2) * d.head_dim, *rest)
    parts = grouped.split([d.heads_per_group * d.head_dim, d.head_dim, d.head_dim], dim=1)
    return tuple(t.reshape(-1, *rest) for t in parts)


def megatron_to_hf(shards: Sequence[Mapping[str, torch.Tensor]], hf_config: Any, *,
                   layout: Layout = "gpt", expert_tp_size: int | None = None) -> StateDict:
    """The full Hugging Face state dict from the TP shards (rank order) of a whole model."""
    return dict(iter_megatron_to_hf(shards, hf_config, layout=layout, expert_tp_size=expert_tp_size))


_LAYER_KEY = re.compile(r"^decoder\.layers\.(\d+)\.(.*)$")


def merge_pipeline_stages(stages: Sequence[Mapping[str, torch.Tensor]], hf_config: Any) -> StateDict:
    """One TP rank's state dict of the whole model from its pipeline stages (in order): layer numbers made global.

    A tied model's last stage carries a copy of the embedding as `output_layer.weight`; it is dropped so that the
    result looks like a single-stage model.
    """
    merged: StateDict = {}
    offset = 0
    for stage in stages:
        count = 0
        for key, t in stage.items():
            m = _LAYER_KEY.match(key)
            if m:
                merged[f"decoder.layers.{offset + int(m[1])}.{m[2]}"] = t
                count = max(count, int(m[1]) + 1)
            else:
                merged[key] = t
        offset += count
    if _dims(hf_config).tied:
        merged.pop(_OUTPUT, None)
    return merged


_LOCAL_EXPERT = re.compile(r"^(decoder\.layers\.\d+\.mlp\.experts\.local_experts\.)(\d+)(\..*)$")


def global_expert_name(name: str, ep_rank: int, local_experts: int) -> str:
    """A parameter name with its local expert number made global (other names unchanged)."""
    m = _LOCAL_EXPERT.match(name)
    return f"{m[1]}{ep_rank * local_experts + int(m[2])}{m[3]}" if m else name


def merge_expert_parallel(ranks: Sequence[Mapping[str, torch.Tensor]], hf_config: Any) -> StateDict:
    """One state dict with every expert under its global number, from those of the expert-parallel ranks (in rank
    order) that share a TP rank and PP stage; everything but the experts is taken from the first."""
    local = _dims(hf_config).experts // len(ranks)
    merged = {k: t for k, t in ranks[0].items() if not _LOCAL_EXPERT.match(k)}
    for rank, state in enumerate(ranks):
        merged.update((global_expert_name(k, rank, local), t) for k, t in state.items() if _LOCAL_EXPERT.match(k))
    return merged


# HybridModel (Transformer Engine spec): GPT layer j becomes attention layer 2j and MLP layer 2j+1, each norm fused
# into the next linear layer, and the final norm renamed (megatron-core's dist_checkpointing/gpt_checkpoint_interop).
_HYBRID_FUSED_NORMS = {"input_layernorm.weight": "self_attention.linear_qkv.layer_norm_weight",
                       "pre_mlp_layernorm.weight": "mlp.linear_fc1.layer_norm_weight"}
_HYBRID_FINAL_NORM = "decoder.final_norm.weight"


def _to_hybrid_key(key: str) -> str:
    if key == _FINAL_NORM:
        return _HYBRID_FINAL_NORM
    m = _LAYER_KEY.match(key)
    if not m:
        return key
    rest = _HYBRID_FUSED_NORMS.get(m[2], m[2])
    is_mlp = rest.startswith("mlp.")
    return f"decoder.layers.{2 * int(m[1]) + is_mlp}.{rest}"


def _from_hybrid_key(key: str) -> str:
    if key == _HYBRID_FINAL_NORM:
        return _FINAL_NORM
    m = _LAYER_KEY.match(key)
    if not m:
        return key
    unfused = {v: k for k, v in _HYBRID_FUSED_NORMS.items()}
    return f"decoder.layers.{int(m[1]) // 2}.{unfused.get(m[2], m[2])}"
