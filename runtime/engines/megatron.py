"""The Megatron-core training engine (`backend: megatron`): one rank's policy, reference or critic.

The training-engine contract (`engines.base.TrainEngine`), built from megatron-core's own parts: the model from the
Hugging Face config (`megatron_model.build_model`) holding this rank's tensor/pipeline shard of the pinned
checkpoint (`megatron_convert.hf_to_megatron`), megatron's `DistributedDataParallel` and optimizer (the distributed
one when `use_distributed_optimizer`), its pipeline schedule over micro-batches (`get_forward_backward_func`,
forward-only for log-probs), bf16 parameters with fp32 master weights on GPU, and `dist_checkpointing` for
checkpoints.

Decisions, and why:
- Parallel sizes come from `actor_rollout_ref.actor.megatron` for every role: the roles of a rank share one
  megatron parallel state, so they must agree.
- Expert parallelism (MoE models) is carved out of data parallelism as megatron does it: the dense layers keep
  `world / (tp x pp x cp)` data-parallel ranks, each MoE layer's experts are split over
  `expert_model_parallel_size` of them (tokens travel to their experts by all-to-all), so the batch arithmetic
  does not change.
- The controller scatters one slice of the batch per rank, as for FSDP. The ranks of a model replica (tensor x
  pipeline x context parallel) must compute on the same samples, so the engine concatenates their slices (an
  all-gather of token ids) and hands each rank back the rows it was given: the controller stays backend-agnostic.
- Context parallelism (`megatron_cp`): each rank runs its two of 2 x cp chunks of every sequence; attention
  all-gathers keys and values; per-token outputs are summed over the group before the loss.
- The update is not here: `engines.update` is shared with the FSDP engine (the same mini-batches, shuffle,
  loss weighting, schedule, clipping and non-finite skip), and hands this engine its loss as a callback that runs
  on the last pipeline stage. Log-probs and entropy come from vocabulary-parallel logits (`megatron_loss`).
- The learning rate is the shared schedule's, written into megatron's parameter groups, rather than megatron's
  `OptimizerParamScheduler`, whose warmup and cosine differ slightly: the same config gives the same LR curve on
  both backends.
- Rotary positions: megatron applies RoPE by sequence index, not `position_ids`. Prompts are left-padded with
  padding keys masked, and RoPE attention depends only on position differences, so log-probs equal the Hugging
  Face model's with `position_ids` (tested).
- Offload (`megatron.param_offload`, `grad_offload`, `optimizer_offload` of the role's own block):
  `megatron_offload` keeps what is offloaded on the CPU outside the phases that use it; each phase (`resident`)
  brings back what it needs, as verl's megatron workers do around each call.
- `use_dist_checkpointing`: the initial weights come from a megatron dist checkpoint (`megatron_dist_weights`)
  instead of the Hugging Face weights at model.path, whose config.json still gives the model's shape.
- megatron-core needs CUDA (it asks `torch.cuda` for devices, RNG states and tensor types); on CPU the engine runs
  only where those calls are answered, as in the tests.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import math
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from megatron.core import dist_checkpointing, parallel_state, tensor_parallel
from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig, finalize_model_grads
from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer
from megatron.core.optimizer.clip_grads import clip_grad_by_total_norm_fp32
from megatron.core.pipeline_parallel import get_forward_backward_func

from rlc.config.engine import (
    DTYPE_NAMES,
    MEGATRON_OPTIMIZER_OVERRIDES,
    PRECISION_AWARE_DTYPES,
    PRECISION_AWARE_WITHOUT_TE,
)
from rlc_runtime.batch import TokenBatch
from rlc_runtime.engines.base import MicroFn, cpu_results
from rlc_runtime.engines.megatron_convert import global_expert_name, hf_to_megatron, iter_megatron_to_hf
from rlc_runtime.engines.megatron_cp import attention_mask, cp_positions, sum_over_ranks
from rlc_runtime.engines.megatron_dist_weights import load_dist_weights
from rlc_runtime.engines.megatron_loss import (
    response_logits,
    vocab_parallel_entropy,
    vocab_parallel_log_probs,
    vocab_parallel_sum_pi_squared,
)
from rlc_runtime.engines.megatron_model import build_model, check_supported, load_shard, megatron_layout
from rlc_runtime.engines.megatron_offload import Offloader, optimizer_tensors
from rlc_runtime.models import load_causal_lm, load_config, load_tokenizer

_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
_OUTPUT = "output_layer.weight"
# Distributed-optimizer state as Megatron-LM saves it by default: each rank writes its own part, nothing is
# gathered; a resume may change the data-parallel size but not the tensor or pipeline parallel sizes.
_CHECKPOINT_FORMAT = {"distrib_optim_sharding_type": "dp_reshardable"}


class MegatronEngine:
    def __init__(self, cfg: Any, role: str, device: str) -> None:
        arf = cfg.actor_rollout_ref
        self.cfg, self.role, self.device = cfg, role, device
        self.train_cfg = {"actor": arf.actor, "ref": arf.ref, "critic": cfg.critic}[role]
        self.model_cfg = cfg.critic.model if role == "critic" else arf.model
        self.parallel = parallel = arf.actor.megatron
        self.tp, self.pp = parallel.tensor_model_parallel_size, parallel.pipeline_model_parallel_size
        self.cp = parallel.context_parallel_size
        self.ep, self.etp = parallel.expert_model_parallel_size, parallel.expert_tensor_parallel_size
        self.temperature = arf.rollout.temperature or 1.0
        _init_parallel_state(parallel, device)
        self.rank = dist.get_rank()
        self.dtype = torch.float32 if device == "cpu" else _DTYPES[parallel.params_dtype]
        self.hf_config = load_config(self.model_cfg)
        if role == "critic":  # a token classifier with one output: the value head
            self.hf_config.num_labels = 1
        check_supported(self.hf_config, self.tp, self.pp, self.ep, self.etp)
        self.sequence_parallel = parallel.sequence_parallel and self.tp > 1
        if self.sequence_parallel and megatron_layout() != "hybrid":  # plain-torch norms cannot sync their grads
            warnings.warn("megatron sequence_parallel needs Transformer Engine, which is not installed: running "
                          "without it", stacklevel=2)
            self.sequence_parallel = False
        self.data_parallel_size = parallel_state.get_data_parallel_world_size()
        self.equal_micro_batches = self.pp > 1  # the pipeline sends activations of one fixed shape
        # the ranks that split each sequence: context parallelism (megatron's own sequence parallelism splits
        # within tensor parallelism); a token budget per GPU grows by it, as in verl
        self.sequence_parallel_size = self.cp
        self.module = self._build()
        self.model: torch.nn.Module = self.module
        self.optimizer: Any = None
        if role != "ref":
            self.model, self.optimizer = self._wrap(self.train_cfg.optim)
        self._layout: dict[str, _Entry] | None = None
        self.offloader = self._offloader(self.train_cfg.megatron)
        self.offloader.offload_all()  # as verl does after building: nothing is on the GPU until a phase needs it

    def _offloader(self, options: Any) -> Offloader:
        """The role's offload switches (the reference has no gradients or optimizer: only its weights move).
        `param_offload` frees the gradient buffers too, as verl's does."""
        parts = {"params": options.param_offload, "grads": options.grad_offload or options.param_offload,
                 "optimizer": options.optimizer_offload}
        sources = {"params": lambda: (p for p in self.module.parameters())}
        if self.optimizer is not None:
            device = next(self.module.parameters()).device
            sources["grads"] = lambda: (b.grad_data for b in (*self.model.buffers, *self.model.expert_parallel_buffers))
            sources["optimizer"] = lambda: optimizer_tensors(self.optimizer, device)
        return Offloader(sources, [name for name, on in parts.items() if on], pin=self.device == "cuda")

    def resident(self, training: bool) -> contextlib.AbstractContextManager[None]:
        """The weights (and with `training` the gradients and optimizer state) on the device for the block; what
        is offloaded goes back to the CPU after it. Nested blocks move nothing more."""
        return self.offloader.resident(("params", "grads", "optimizer") if training else ("params",))

    # setup -----------------------------------------------------------------------------------------------------
    def _build(self) -> torch.nn.Module:
        """This rank's chunk with its converted weights, or those of a dist checkpoint. The critic is the same
        backbone with a one-output value head in place of the vocabulary projection (its Hugging Face checkpoint is
        a token classifier)."""
        critic = self.role == "critic"
        config = copy.deepcopy(self.hf_config)
        config.tie_word_embeddings = config.tie_word_embeddings and not critic
        recompute = {"recompute_granularity": "full", "recompute_method": "uniform", "recompute_num_layers": 1} \
            if self.model_cfg.enable_gradient_checkpointing and self.role != "ref" else {}
        model = build_model(config, self.tp, self.pp, self.dtype, ep=self.ep, etp=self.etp,
                            use_cpu_initialization=self.device == "cpu", sequence_parallel=self.sequence_parallel,
                            context_parallel_size=self.cp, **recompute)
        for param in model.parameters():  # megatron's torch norms are built fp32 whatever params_dtype says;
            param.data = param.data.to(self.dtype)  # mixed dtypes break its distributed-optimizer checkpoints
        options = self.train_cfg.megatron
        if critic or not options.use_dist_checkpointing:  # a critic's value head comes from model.path
            self._load_hf_weights(model, config)
        if options.use_dist_checkpointing:
            load_dist_weights(model, options.dist_checkpointing_path, options.dist_checkpointing_prefix,
                              _CHECKPOINT_FORMAT, value_model=critic)
        return model.to(self.device)

    def _load_hf_weights(self, model: torch.nn.Module, config: Any) -> None:
        """This rank's shard of the Hugging Face weights at model.path, converted."""
        critic = self.role == "critic"
        with torch.random.fork_rng(devices=[]):  # a new value head gets the same initial weights on every rank
            torch.manual_seed(self.parallel.seed)
            hf_state = load_causal_lm(self.model_cfg, self.dtype, for_critic=critic).state_dict()
        score = hf_state.pop("score.weight", None)
        if critic:  # the converter splits a vocabulary head for an untied model; the value head replaces it
            hf_state["lm_head.weight"] = hf_state["model.embed_tokens.weight"]
        shard = hf_to_megatron(hf_state, config, self.tp, parallel_state.get_tensor_model_parallel_rank(),
                               pp_size=self.pp, pp_rank=parallel_state.get_pipeline_model_parallel_rank(),
                               ep_size=self.ep, ep_rank=parallel_state.get_expert_model_parallel_rank(),
                               etp_size=parallel_state.get_expert_tensor_parallel_world_size(),
                               etp_rank=parallel_state.get_expert_tensor_parallel_rank(), layout=megatron_layout())
        del hf_state
        if critic and parallel_state.is_pipeline_last_stage():
            model.output_layer = _ValueHead(score.to(self.dtype), self.sequence_parallel)
            shard[_OUTPUT] = score
        load_shard(model, shard)

    def _wrap(self, optim: Any) -> tuple[torch.nn.Module, Any]:
        """megatron's DDP (gradient buckets, reduce-scatter under the distributed optimizer) and its optimizer."""
        config, distributed = self.module.config, self.parallel.use_distributed_optimizer
        ddp = DistributedDataParallel(config=config, module=self.module, ddp_config=DistributedDataParallelConfig(
            grad_reduce_in_fp32=True, use_distributed_optimizer=distributed))
        optimizer = get_megatron_optimizer(OptimizerConfig(
            optimizer="adam", lr=optim.lr, weight_decay=optim.weight_decay, adam_beta1=optim.betas[0],
            adam_beta2=optim.betas[1], clip_grad=self.train_cfg.grad_clip, bf16=self.dtype == torch.bfloat16,
            fp16=self.dtype == torch.float16, params_dtype=self.dtype, use_distributed_optimizer=distributed,
            **_optimizer_overrides(optim.override_optimizer_config)), [ddp])
        config.no_sync_func = ddp.no_sync
        config.finalize_model_grads_func = finalize_model_grads
        config.grad_scale_func = optimizer.scale_loss
        return ddp, optimizer

    # the contract (engines.base.TrainEngine) ---------------------------------------------------------------------
    def forward_backward(self, parts: list[TokenBatch], fn: MicroFn, backward: bool) -> list[dict[str, Any]]:
        """megatron's schedule over the micro-batches; `fn` runs on the last pipeline stage, whose results are
        broadcast to the other stages."""
        micro = [self._device_inputs(part) for part in parts]

        def forward_step(iterator: Iterator[dict[str, Any]], model: torch.nn.Module) -> tuple[torch.Tensor, Any]:
            mb = next(iterator)
            output = model(mb["input_ids"], mb["position_ids"], mb["attention_mask"])

            def loss_func(out: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any]]:
                loss, found = fn(mb["part"], _Outputs(self, mb["part"], out, mb["positions"]))
                loss = out.new_zeros((), dtype=torch.float32) if loss is None else loss
                return loss * len(micro), cpu_results(found)  # megatron divides the loss by len(micro)

            return output, loss_func

        self.model.train(backward)
        with self.resident(backward), torch.set_grad_enabled(backward):
            results = get_forward_backward_func()(
                forward_step_func=forward_step, data_iterator=iter(micro), model=[self.model],
                num_microbatches=len(micro), seq_length=micro[0]["length"],
                micro_batch_size=len(parts[0]), forward_only=not backward)
        return self._from_last_stage(list(results) if parallel_state.is_pipeline_last_stage() else None)

    def optimizer_step(self, lr: float, max_norm: float) -> float:
        """megatron's own step, taken apart so that a non-finite norm skips it as on the FSDP engine (megatron
        checks only under a loss scaler, i.e. fp16)."""
        with self.resident(training=True):
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            found_inf = self.optimizer.prepare_grads()
            norm = float(self.optimizer.get_grad_norm() or 0.0)
            if not found_inf and math.isfinite(norm):
                for inner in getattr(self.optimizer, "chained_optimizers", [self.optimizer]):
                    if params := inner.get_parameters():  # the precision-aware optimizer keeps `decoupled_grad`
                        clip_grad_by_total_norm_fp32(params, max_norm=max_norm, total_norm=norm, use_decoupled_grad=
                                                     inner.config.use_precision_aware_optimizer_no_fp8_or_ds_fp8)
                self.optimizer.step_with_ready_grads()
            self.model.zero_grad_buffer()  # zero between updates: an offloaded gradient buffer need not be copied
            self.optimizer.zero_grad()
        return norm

    def all_reduce_sum(self, values: torch.Tensor) -> torch.Tensor:
        return self._all_reduce(values, dist.ReduceOp.SUM)

    def all_reduce_max(self, values: torch.Tensor) -> torch.Tensor:
        return self._all_reduce(values, dist.ReduceOp.MAX)

    def _all_reduce(self, values: torch.Tensor, op: dist.ReduceOp.RedOpType) -> torch.Tensor:
        values = values.to(self.device)
        dist.all_reduce(values, op=op, group=parallel_state.get_data_parallel_group())
        return values.cpu()

    def data_batch(self, batch: TokenBatch) -> tuple[TokenBatch, slice]:
        """The slices of every rank of this data-parallel replica (tensor x pipeline x context parallel),
        concatenated; and where this rank's rows are. megatron has no group of those three, so the slices are
        gathered over the model-parallel group, then over the context-parallel group."""
        rows, start = len(batch), 0
        for group in (parallel_state.get_model_parallel_group(), parallel_state.get_context_parallel_group()):
            size = dist.get_world_size(group)
            if size > 1:
                start += dist.get_rank(group) * len(batch)
                batch = self._gather_rows(batch, group, size)
        return batch, slice(start, start + rows) if len(batch) > rows else slice(None)

    def _gather_rows(self, batch: TokenBatch, group: dist.ProcessGroup, size: int) -> TokenBatch:
        fields: dict[str, Any] = {}
        for name, value in vars(batch).items():
            if isinstance(value, torch.Tensor):
                local = value.to(self.device).contiguous()
                parts = [torch.empty_like(local) for _ in range(size)]
                dist.all_gather(parts, local, group=group)
                fields[name] = torch.cat(parts).cpu()
        return TokenBatch(**fields)

    # forward passes --------------------------------------------------------------------------------------------
    def _device_inputs(self, part: TokenBatch) -> dict[str, Any]:
        """A micro-batch's model inputs on the device: sequences right-padded to a multiple of the tensor-parallel
        size when sequence parallelism splits them, and of 2 x the context-parallel size, whose ranks each take
        their two chunks (`megatron_cp`); the attention mask is causal plus padding keys (True = masked)."""
        multiple = (self.tp if self.sequence_parallel else 1) * (2 * self.cp if self.cp > 1 else 1)
        pad = -part.input_ids.shape[1] % multiple
        ids, keep, pos = (F.pad(t, (0, pad)) for t in (part.input_ids, part.attention_mask, part.position_ids))
        rank = parallel_state.get_context_parallel_rank()
        mine = cp_positions(ids.shape[1], self.cp, rank)
        return {"input_ids": ids[:, mine].to(self.device), "position_ids": pos[:, mine].to(self.device),
                "attention_mask": attention_mask(keep.to(self.device), self.cp, rank), "part": part,
                "positions": mine, "length": ids.shape[1]}

    def _from_last_stage(self, value: Any) -> Any:
        """A result of the last pipeline stage (CPU tensors, floats), on every stage."""
        if self.pp == 1:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=parallel_state.get_pipeline_model_parallel_last_rank(),
                                   group=parallel_state.get_pipeline_model_parallel_group())
        return box[0]

    # weights and checkpoints -----------------------------------------------------------------------------------
    def named_weights(self) -> Iterator[tuple[str, torch.Tensor]]:
        """Full tensors under Hugging Face names, one at a time (a collective: every rank must iterate). The
        critic yields its backbone and `score.weight`, the names of a token-classification model."""
        with self.resident(training=False):
            yield from self._named_weights()

    def _named_weights(self) -> Iterator[tuple[str, torch.Tensor]]:
        shards = _GatheredShards(self._weight_layout(), dict(self.module.named_parameters()), self.device)
        config = self.hf_config
        if self.role == "critic":
            config = copy.deepcopy(config)
            config.tie_word_embeddings = True  # no vocabulary head to convert: the value head follows
        yield from iter_megatron_to_hf(shards, config, layout=megatron_layout(),
                                       expert_tp_size=parallel_state.get_expert_tensor_parallel_world_size())
        if self.role == "critic":
            yield "score.weight", shards[0][_OUTPUT]

    def _weight_layout(self) -> dict[str, _Entry]:
        """Every parameter of the whole model under its single-stage megatron name (stages hold consecutive
        layers, numbered from 0 within a stage; experts carry their global number); the pipeline stages, then
        the expert-parallel ranks, exchange their entries once."""
        if self._layout is None:
            stage = parallel_state.get_pipeline_model_parallel_rank()
            ep_rank = parallel_state.get_expert_model_parallel_rank()
            per_stage = self.module.config.num_layers // self.pp
            local_experts = (self.module.config.num_moe_experts or 0) // self.ep
            local = {}
            for name, param in self.module.named_parameters():
                if name == _OUTPUT and self.hf_config.tie_word_embeddings and self.role != "critic":
                    continue  # the last stage's copy of a tied embedding
                parts = name.split(".")
                if name.startswith("decoder.layers."):
                    parts[2] = str(int(parts[2]) + stage * per_stage)
                expert = ".mlp.experts." in name  # routed experts (not the shared expert)
                key = global_expert_name(".".join(parts), ep_rank, local_experts)
                local[key] = _Entry(stage, name, tuple(param.shape), param.dtype,
                                    bool(getattr(param, "tensor_model_parallel", False)), ep_rank if expert else None)
            parts_of_model = [local]
            for size, group in ((self.pp, parallel_state.get_pipeline_model_parallel_group()),
                                (self.ep, parallel_state.get_expert_model_parallel_group())):
                if size > 1:
                    gathered: list[Any] = [None] * size
                    dist.all_gather_object(gathered, parts_of_model, group=group)
                    parts_of_model = [p for ranks in gathered for p in ranks]
            self._layout = {k: _Entry(*v) for part in parts_of_model for k, v in part.items()}
        return self._layout

    def save_checkpoint(self, directory: Path, extra: dict[str, Any]) -> None:
        path = Path(directory) / "dist_ckpt"
        path.mkdir(parents=True, exist_ok=True)
        dist.barrier()
        with self.offloader.resident(("params", "optimizer")):
            dist_checkpointing.save(self._sharded_state(loading=False) | {"update": extra}, str(path))
        if self.rank == 0:  # as verl writes it: the config and tokenizer beside the sharded weights
            self.hf_config.save_pretrained(Path(directory) / "huggingface")
            load_tokenizer(self.model_cfg).save_pretrained(Path(directory) / "huggingface")

    @torch.no_grad()  # the optimizer copies into views of fp32 parameters
    def load_checkpoint(self, directory: Path) -> dict[str, Any]:
        path = Path(directory) / "dist_ckpt"
        if not (path / "metadata.json").exists():
            raise FileNotFoundError(f"{path} holds no megatron distributed checkpoint (metadata.json is missing)")
        with self.offloader.resident(("params", "optimizer")):
            state = dist_checkpointing.load(self._sharded_state(loading=True), str(path))
            self.module.load_state_dict(state["model"])
            if self.optimizer is not None:
                self.optimizer.load_state_dict(state["optimizer"])
                _restore_adam_steps(self.optimizer)
        return dict(state.get("update") or {})

    def _sharded_state(self, loading: bool) -> dict[str, Any]:
        metadata = dict(_CHECKPOINT_FORMAT)  # megatron adds its process groups to it
        model = self.module.sharded_state_dict(metadata=metadata)
        state: dict[str, Any] = {"model": model}
        if self.optimizer is not None:
            state["optimizer"] = self.optimizer.sharded_state_dict(model, is_loading=loading, metadata=metadata)
        return state

    def save_hf(self, directory: Path) -> None:
        """Every rank gathers; rank 0 writes `save_pretrained` of a model built from the config (on the meta
        device: it only names the tensors), and the tokenizer."""
        # copies: a yielded tensor can be a view of a parameter, which an offload releases after the loop
        state = {name: tensor.to("cpu", copy=True) if self.rank == 0 else None for name, tensor in self.named_weights()}
        if self.rank != 0:
            return
        from transformers import AutoModelForCausalLM, AutoModelForTokenClassification

        with torch.device("meta"):
            model = (AutoModelForTokenClassification if self.role == "critic" else AutoModelForCausalLM) \
                .from_config(self.hf_config)
        Path(directory).mkdir(parents=True, exist_ok=True)
        model.save_pretrained(directory, state_dict=state)
        load_tokenizer(self.model_cfg).save_pretrained(directory)


class _Entry(NamedTuple):
    stage: int  # the pipeline stage that holds the parameter
    local_name: str
    shape: tuple[int, ...]  # of one tensor-parallel shard
    dtype: torch.dtype
    split: bool  # split over the tensor-parallel ranks (expert-tensor-parallel for experts; else replicated)
    expert_rank: int | None = None  # the expert-parallel rank that holds it (None: not an expert parameter)


class _GatheredShards:
    """The tensor-parallel shards of the whole model as `iter_megatron_to_hf` reads them (`shards[r][name]`; an
    expert's pieces are those of the expert-tensor-parallel ranks): each tensor is gathered from the ranks that
    hold it when first read, and only the latest one is kept."""

    def __init__(self, layout: dict[str, _Entry], params: dict[str, torch.Tensor], device: str) -> None:
        self.layout, self.params, self.device = layout, params, device
        self.size = parallel_state.get_tensor_model_parallel_world_size()
        self.cached: tuple[str, list[torch.Tensor]] | None = None

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, rank: int) -> _ShardView:
        if not 0 <= rank < self.size:
            raise IndexError(rank)
        return _ShardView(self, rank)

    def pieces(self, name: str) -> list[torch.Tensor]:
        if self.cached is None or self.cached[0] != name:
            self.cached = None  # free the previous tensor before gathering the next
            self.cached = (name, self._gather(self.layout[name]))
        return self.cached[1]

    def _gather(self, entry: _Entry) -> list[torch.Tensor]:
        expert = entry.expert_rank is not None
        here = parallel_state.get_pipeline_model_parallel_rank() == entry.stage and (
            not expert or parallel_state.get_expert_model_parallel_rank() == entry.expert_rank)
        mine = self.params[entry.local_name].detach() if here else \
            torch.empty(entry.shape, dtype=entry.dtype, device=self.device)
        group, size = (parallel_state.get_expert_tensor_parallel_group(),
                       parallel_state.get_expert_tensor_parallel_world_size()) if expert else \
            (parallel_state.get_tensor_model_parallel_group(), self.size)
        pieces = [mine]
        if entry.split and size > 1:
            pieces = [torch.empty_like(mine) for _ in range(size)]
            if here:  # a whole (expert-)tensor-parallel group holds the tensor or none of it does
                dist.all_gather(pieces, mine.contiguous(), group=group)
        owners = [] if not expert else [(parallel_state.get_expert_model_parallel_group(), entry.expert_rank)]
        for group, owner in [*owners, (parallel_state.get_pipeline_model_parallel_group(), entry.stage)]:
            if dist.get_world_size(group) > 1:  # from the owning EP rank, then the owning stage, to the others
                for piece in pieces:
                    dist.broadcast(piece, src=dist.get_global_rank(group, owner), group=group)
        return pieces if len(pieces) >= self.size else (pieces * self.size)[: self.size]


class _ShardView:
    """`shards[r]`: reads of one tensor-parallel rank's shard (what `iter_megatron_to_hf` needs of a mapping)."""

    def __init__(self, shards: _GatheredShards, rank: int) -> None:
        self.shards, self.rank = shards, rank

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.shards.pieces(name)[self.rank]

    def __contains__(self, name: object) -> bool:
        return name in self.shards.layout

    def items(self) -> Iterator[tuple[str, torch.Tensor]]:
        return ((name, self[name]) for name in self.shards.layout)


class _ValueHead(torch.nn.Module):
    """The critic's head in place of the vocabulary projection: one output per position, the same weights on
    every tensor-parallel rank. Under sequence parallelism its input is gathered first; each rank then computes
    the whole gradient, so the backward only splits it (no reduction)."""

    def __init__(self, weight: torch.Tensor, sequence_parallel: bool) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.empty_like(weight))
        self.sequence_parallel = sequence_parallel

    def forward(self, hidden: torch.Tensor, weight: torch.Tensor | None = None, **_: Any) -> tuple[torch.Tensor, None]:
        if self.sequence_parallel:
            hidden = tensor_parallel.gather_from_sequence_parallel_region(hidden, tensor_parallel_output_grad=False)
        return F.linear(hidden, self.weight), None


class _Outputs:
    """One micro-batch's output on the last pipeline stage: [b, s, V/T] vocabulary-parallel logits (or [b, s, 1]
    values) at `positions` of the sequence (all of them, or this rank's chunks under context parallelism), read
    where they predict a response token. Under context parallelism each rank computes its own positions and the
    [b, R] results are summed over the group (`megatron_cp.sum_over_ranks`)."""

    def __init__(self, engine: MegatronEngine, part: TokenBatch, output: torch.Tensor,
                 positions: torch.Tensor) -> None:
        self.engine, self.part, self.output = engine, part, output
        start, length = part.prompt_length - 1, part.responses.shape[1]  # position t predicts token t + 1
        self.rows: slice | torch.Tensor = slice(start, start + length)  # a view, not a copy of the logits
        self.columns: slice | torch.Tensor = slice(None)
        if engine.cp > 1:
            columns = positions - start
            rows = ((columns >= 0) & (columns < length)).nonzero().squeeze(-1)
            self.rows, self.columns = rows.to(output.device), columns[rows].to(output.device)

    def _logits(self) -> torch.Tensor:
        """A fresh tensor each time: megatron's cross-entropy overwrites its input."""
        e = self.engine
        return response_logits(self.output[:, self.rows], e.temperature, e.hf_config.vocab_size)

    def _responses(self, local: torch.Tensor) -> torch.Tensor:
        """[b, R] aligned with the responses, from this rank's [b, rows]."""
        if self.engine.cp == 1:  # the rows are the response positions, in order
            return local
        placed = local.new_zeros(len(local), self.part.responses.shape[1]).index_add(1, self.columns, local)
        return sum_over_ranks(placed, parallel_state.get_context_parallel_group())

    def log_probs(self) -> torch.Tensor:
        labels = self.part.responses.to(self.output.device)[:, self.columns]
        return self._responses(vocab_parallel_log_probs(self._logits(), labels))

    def entropy(self, grad: bool) -> torch.Tensor:
        with torch.set_grad_enabled(grad and torch.is_grad_enabled()):
            return self._responses(vocab_parallel_entropy(self._logits()))

    def sum_pi_squared(self) -> torch.Tensor:
        return self._responses(vocab_parallel_sum_pi_squared(self._logits()))

    def values(self) -> torch.Tensor:
        return self._responses(self.output[:, self.rows, 0].float())


def _optimizer_overrides(overrides: dict[str, Any] | None) -> dict[str, Any]:
    """`optim.override_optimizer_config` as megatron's `OptimizerConfig` fields (the compiler refuses other keys)."""
    overrides = overrides or {}
    unknown = sorted(set(overrides) - set(MEGATRON_OPTIMIZER_OVERRIDES))
    if unknown:
        raise ValueError(f"optim.override_optimizer_config keys {unknown} are not supported by the Megatron "
                         f"engine; supported: {sorted(MEGATRON_OPTIMIZER_OVERRIDES)}")
    if overrides.get("use_precision_aware_optimizer") and importlib.util.find_spec("transformer_engine") is None:
        warnings.warn(PRECISION_AWARE_WITHOUT_TE, stacklevel=2)  # the compiler warned with the same words
        dropped = ("use_precision_aware_optimizer", *PRECISION_AWARE_DTYPES)  # megatron keeps them fp32 without it
        overrides = {key: value for key, value in overrides.items() if key not in dropped}
    return {MEGATRON_OPTIMIZER_OVERRIDES[key]: getattr(torch, DTYPE_NAMES[str(value)])
            if key in PRECISION_AWARE_DTYPES else value for key, value in overrides.items()}


def _restore_adam_steps(optimizer: Any) -> None:
    """Put the checkpoint's Adam step back on every parameter. With torch's Adam (no Apex or Transformer Engine),
    megatron-core 0.16-0.19 reads the step from the saved parameter groups, gives all parameters one shared step
    tensor (which torch's foreach Adam would advance once per parameter), then overwrites it with the live
    value while loading the sharded state."""
    for chained in getattr(optimizer, "chained_optimizers", [optimizer]):
        inner = chained.optimizer
        for group in inner.param_groups:
            for param in group["params"] if "step" in group else ():
                if "step" in inner.state.get(param, {}):
                    inner.state[param]["step"] = torch.tensor(float(group["step"]), dtype=torch.float32)


def _init_parallel_state(megatron: Any, device: str) -> None:
    """megatron's process groups over the ranks the worker joined (once per process: every role shares them)."""
    if not dist.is_initialized():
        raise RuntimeError("the Megatron engine needs torch.distributed initialised (the worker does this)")
    if parallel_state.model_parallel_is_initialized():
        return
    parallel_state.initialize_model_parallel(tensor_model_parallel_size=megatron.tensor_model_parallel_size,
                                             pipeline_model_parallel_size=megatron.pipeline_model_parallel_size,
                                             context_parallel_size=megatron.context_parallel_size,
                                             expert_model_parallel_size=megatron.expert_model_parallel_size,
                                             expert_tensor_parallel_size=megatron.expert_tensor_parallel_size)
    if device == "cuda":
        tensor_parallel.model_parallel_cuda_manual_seed(megatron.seed)
