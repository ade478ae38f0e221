"""The Megatron-core training engine (`backend: megatron`): one rank's policy, reference or critic.

The `TrainEngine` interface of the FSDP2 engine, built from megatron-core's own parts: the model from the Hugging
Face config (`megatron_model.build_model`) holding this rank's tensor/pipeline shard of the pinned checkpoint
(`megatron_convert.hf_to_megatron`), megatron's `DistributedDataParallel` and optimizer (the distributed one when
`use_distributed_optimizer`), its pipeline schedule over micro-batches (`get_forward_backward_func`, forward-only
for log-probs), bf16 parameters with fp32 master weights on GPU, and `dist_checkpointing` for checkpoints.

Decisions, and why:
- Parallel sizes come from `actor_rollout_ref.actor.megatron` for every role: the roles of a rank share one
  megatron parallel state, so they must agree.
- The controller scatters one slice of the batch per rank, as for FSDP. The ranks of a model-parallel group
  (tensor x pipeline) must compute on the same samples, so the engine concatenates their slices (an all-gather
  of token ids) and hands each rank back the rows it was given: the controller stays backend-agnostic.
- Log-probs, entropy and losses come from vocabulary-parallel logits (`megatron_loss`), then the shared
  `algorithms.losses` on [b, R] tensors. Each micro-batch's loss is weighted by its share of the mini-batch, as
  in the FSDP engine, so both backends optimise the same objective.
- The learning rate follows the FSDP engine's schedule (warmup, then constant/cosine/linear, stepped once per
  update call), written into megatron's parameter groups, rather than megatron's `OptimizerParamScheduler`, whose
  warmup and cosine differ slightly: the same config gives the same LR curve on both backends.
- Rotary positions: megatron applies RoPE by sequence index, not `position_ids`. Prompts are left-padded with
  padding keys masked, and RoPE attention depends only on position differences, so log-probs equal the Hugging
  Face model's with `position_ids` (tested).
- megatron-core needs CUDA (it asks `torch.cuda` for devices, RNG states and tensor types); on CPU the engine runs
  only where those calls are answered, as in the tests.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from megatron.core import dist_checkpointing, parallel_state, tensor_parallel
from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig, finalize_model_grads
from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer
from megatron.core.pipeline_parallel import get_forward_backward_func

from rlc_runtime.algorithms.losses import agg_loss, kl_penalty, value_loss
from rlc_runtime.algorithms.policy_losses import compute_policy_loss
from rlc_runtime.batch import TokenBatch
from rlc_runtime.engines.megatron_convert import hf_to_megatron, iter_megatron_to_hf
from rlc_runtime.engines.megatron_loss import response_logits, vocab_parallel_entropy, vocab_parallel_log_probs
from rlc_runtime.engines.megatron_model import build_model, check_supported, load_shard, megatron_layout
from rlc_runtime.models import load_causal_lm, load_config, load_tokenizer

_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
_OUTPUT = "output_layer.weight"
_PER_TOKEN = ("responses", "response_mask", "old_log_probs", "ref_log_probs", "advantages", "values", "returns",
              "rollout_is_weights")
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
        self.temperature = arf.rollout.temperature or 1.0
        _init_parallel_state(parallel, device)
        self.rank = dist.get_rank()
        self.dtype = torch.float32 if device == "cpu" else _DTYPES[parallel.params_dtype]
        self.hf_config = load_config(self.model_cfg)
        if role == "critic":  # a token classifier with one output: the value head
            self.hf_config.num_labels = 1
        check_supported(self.hf_config, self.tp, self.pp)
        self.sequence_parallel = parallel.sequence_parallel and self.tp > 1
        if self.sequence_parallel and megatron_layout() != "hybrid":  # plain-torch norms cannot sync their grads
            warnings.warn("megatron sequence_parallel needs Transformer Engine, which is not installed: running "
                          "without it", stacklevel=2)
            self.sequence_parallel = False
        self.module = self._build()
        self.model: torch.nn.Module = self.module
        self.optimizer: Any = None
        self.step = 0  # update calls so far: the LR schedule's position
        if role != "ref":
            self.model, self.optimizer = self._wrap(self.train_cfg.optim)
        self._layout: dict[str, _Entry] | None = None

    # setup -----------------------------------------------------------------------------------------------------
    def _build(self) -> torch.nn.Module:
        """This rank's chunk with its converted weights. The critic is the same backbone with a one-output value
        head in place of the vocabulary projection (its Hugging Face checkpoint is a token classifier)."""
        critic = self.role == "critic"
        config = copy.deepcopy(self.hf_config)
        config.tie_word_embeddings = config.tie_word_embeddings and not critic
        recompute = {"recompute_granularity": "full", "recompute_method": "uniform", "recompute_num_layers": 1} \
            if self.model_cfg.enable_gradient_checkpointing and self.role != "ref" else {}
        model = build_model(config, self.tp, self.pp, self.dtype, use_cpu_initialization=self.device == "cpu",
                            sequence_parallel=self.sequence_parallel, **recompute)
        for param in model.parameters():  # megatron's torch norms are built fp32 whatever params_dtype says;
            param.data = param.data.to(self.dtype)  # mixed dtypes break its distributed-optimizer checkpoints
        with torch.random.fork_rng(devices=[]):  # a new value head gets the same initial weights on every rank
            torch.manual_seed(self.parallel.seed)
            hf_state = load_causal_lm(self.model_cfg, self.dtype, for_critic=critic).state_dict()
        score = hf_state.pop("score.weight", None)
        if critic:  # the converter splits a vocabulary head for an untied model; the value head replaces it
            hf_state["lm_head.weight"] = hf_state["model.embed_tokens.weight"]
        shard = hf_to_megatron(hf_state, config, self.tp, parallel_state.get_tensor_model_parallel_rank(),
                               pp_size=self.pp, pp_rank=parallel_state.get_pipeline_model_parallel_rank(),
                               layout=megatron_layout())
        del hf_state
        if critic and parallel_state.is_pipeline_last_stage():
            model.output_layer = _ValueHead(score.to(self.dtype), self.sequence_parallel)
            shard[_OUTPUT] = score
        load_shard(model, shard)
        return model.to(self.device)

    def _wrap(self, optim: Any) -> tuple[torch.nn.Module, Any]:
        """megatron's DDP (gradient buckets, reduce-scatter under the distributed optimizer) and its optimizer."""
        config, distributed = self.module.config, self.parallel.use_distributed_optimizer
        ddp = DistributedDataParallel(config=config, module=self.module, ddp_config=DistributedDataParallelConfig(
            grad_reduce_in_fp32=True, use_distributed_optimizer=distributed))
        optimizer = get_megatron_optimizer(OptimizerConfig(
            optimizer="adam", lr=optim.lr, weight_decay=optim.weight_decay, adam_beta1=optim.betas[0],
            adam_beta2=optim.betas[1], clip_grad=self.train_cfg.grad_clip, bf16=self.dtype == torch.bfloat16,
            fp16=self.dtype == torch.float16, params_dtype=self.dtype, use_distributed_optimizer=distributed), [ddp])
        config.no_sync_func = ddp.no_sync
        config.finalize_model_grads_func = finalize_model_grads
        config.grad_scale_func = optimizer.scale_loss
        return ddp, optimizer

    def _lr_factor(self, optim: Any) -> float:
        """The FSDP engine's schedule at update `self.step` (see the module docstring)."""
        total = max(1, optim.total_training_steps)
        warmup = optim.lr_warmup_steps if optim.lr_warmup_steps > 0 else int(optim.lr_warmup_steps_ratio * total)
        if self.step < warmup:
            return (self.step + 1) / (warmup + 1)
        progress, floor = min(1.0, (self.step - warmup) / max(1, total - warmup)), optim.min_lr_ratio
        if optim.lr_scheduler_type == "cosine":
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * 2 * optim.num_cycles * progress))
        if optim.lr_scheduler_type == "linear":
            return floor + (1 - floor) * (1 - progress)
        return 1.0

    # forward passes --------------------------------------------------------------------------------------------
    def _micro_batches(self, batch: TokenBatch, size: int) -> list[dict[str, Any]]:
        """Device tensors per micro-batch, sequences right-padded to a multiple of the tensor-parallel size when
        sequence parallelism splits them; the attention mask is causal plus padding keys (True = masked)."""
        size = max(1, min(size or 1, len(batch)))
        if self.pp > 1:  # the pipeline sends activations of one fixed shape
            size = max(d for d in range(1, size + 1) if len(batch) % d == 0)
        pad = -batch.input_ids.shape[1] % (self.tp if self.sequence_parallel else 1)
        out = []
        for start in range(0, len(batch), size):
            part = batch.select(list(range(start, min(start + size, len(batch)))))
            ids, keep, pos = (F.pad(t, (0, pad)).to(self.device)
                              for t in (part.input_ids, part.attention_mask, part.position_ids))
            causal = torch.ones(ids.shape[1], ids.shape[1], dtype=torch.bool, device=self.device).triu(1)
            mb = {"input_ids": ids, "position_ids": pos, "attention_mask": causal | ~keep.bool()[:, None, None, :],
                  "prompt_length": part.prompt_length, "weight": len(part) / len(batch), "size": len(part)}
            mb |= {k: getattr(part, k).to(self.device) for k in _PER_TOKEN if getattr(part, k) is not None}
            out.append(mb)
        return out

    def _run(self, batch: TokenBatch, micro_size: int, loss_fn: Callable, forward_only: bool) -> list[Any]:
        """megatron's schedule over the micro-batches. `loss_fn(mb, output) -> (loss, outputs)` runs on the last
        pipeline stage, which returns the list of `outputs` (the other stages an empty list)."""
        micro = self._micro_batches(batch, micro_size)

        def forward_step(iterator: Iterator[dict[str, Any]], model: torch.nn.Module) -> tuple[torch.Tensor, Any]:
            mb = next(iterator)
            output = model(mb["input_ids"], mb["position_ids"], mb["attention_mask"])
            return output, lambda out: _times(loss_fn(mb, out), len(micro))  # megatron divides by len(micro)

        return get_forward_backward_func()(
            forward_step_func=forward_step, data_iterator=iter(micro), model=[self.model],
            num_microbatches=len(micro), seq_length=micro[0]["input_ids"].shape[1],
            micro_batch_size=micro[0]["size"], forward_only=forward_only)

    def _logits(self, mb: dict[str, Any], output: torch.Tensor) -> torch.Tensor:
        return response_logits(output, mb["prompt_length"], mb["responses"].shape[1], self.temperature,
                               self.hf_config.vocab_size)

    def _log_probs(self, with_entropy: bool, mb: dict[str, Any], output: torch.Tensor) -> tuple[torch.Tensor, Any]:
        result = {"log_probs": vocab_parallel_log_probs(self._logits(mb, output), mb["responses"])}
        if with_entropy:
            result["entropy"] = vocab_parallel_entropy(self._logits(mb, output))
        return output.new_zeros((), dtype=torch.float32), result

    @staticmethod
    def _values(mb: dict[str, Any], output: torch.Tensor) -> torch.Tensor:
        start = mb["prompt_length"] - 1
        return output[:, start:start + mb["responses"].shape[1], 0].float()

    @torch.no_grad()
    def compute_log_probs(self, batch: TokenBatch, micro_batch_size: int,
                          with_entropy: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        self.model.eval()
        full, mine = self._gather(batch)
        outputs = self._run(full, micro_batch_size, partial(self._log_probs, with_entropy), forward_only=True)
        result = self._from_last_stage({k: torch.cat([o[k] for o in outputs]).cpu() for k in outputs[0]}
                                       if outputs else None)
        return result["log_probs"][mine], result["entropy"][mine] if with_entropy else None

    @torch.no_grad()
    def compute_values(self, batch: TokenBatch, micro_batch_size: int) -> torch.Tensor:
        self.model.eval()
        full, mine = self._gather(batch)
        outputs = self._run(full, micro_batch_size, lambda mb, out: (out.new_zeros(()), self._values(mb, out)),
                            forward_only=True)
        return self._from_last_stage(torch.cat(outputs).cpu() if outputs else None)[mine]

    # updates ---------------------------------------------------------------------------------------------------
    def update_policy(self, batch: TokenBatch) -> dict[str, float]:
        actor = self.train_cfg
        return self._update(batch, self._policy_loss, actor.ppo_epochs, actor.shuffle,
                            actor.ppo_micro_batch_size_per_gpu, "actor")

    def _policy_loss(self, mb: dict[str, Any], output: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        actor, mask = self.train_cfg, mb["response_mask"]
        log_prob = vocab_parallel_log_probs(self._logits(mb, output), mb["responses"])
        with torch.set_grad_enabled(actor.entropy_coeff != 0):  # otherwise only reported: keep no graph
            entropy = agg_loss(vocab_parallel_entropy(self._logits(mb, output)), mask, actor.loss_agg_mode)
        pg_loss, pg_metrics = compute_policy_loss(
            actor.policy_loss.loss_mode, mb["old_log_probs"], log_prob, mb["advantages"], mask, actor.loss_agg_mode,
            actor, mb.get("rollout_is_weights"))
        loss = pg_loss - actor.entropy_coeff * entropy
        metrics = {"actor/pg_loss": pg_loss, "actor/entropy": entropy, **pg_metrics}
        if actor.use_kl_loss and "ref_log_probs" in mb:
            kl = agg_loss(kl_penalty(log_prob, mb["ref_log_probs"], actor.kl_loss_type), mask, actor.loss_agg_mode)
            loss = loss + actor.kl_loss_coef * kl
            metrics |= {"actor/kl_loss": kl, "actor/kl_coef": torch.tensor(actor.kl_loss_coef)}
        return loss * mb["weight"], {k: float(v.detach()) for k, v in metrics.items()}

    def update_critic(self, batch: TokenBatch) -> dict[str, float]:
        critic = self.train_cfg
        return self._update(batch, self._value_loss, critic.ppo_epochs, critic.shuffle,
                            critic.ppo_micro_batch_size_per_gpu, "critic")

    def _value_loss(self, mb: dict[str, Any], output: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        mask, values = mb["response_mask"], self._values(mb, output)
        loss, clipfrac = value_loss(values, mb["returns"], mb["values"], mask, self.train_cfg.cliprange_value,
                                    self.train_cfg.loss_agg_mode)
        return loss * mb["weight"], {
            "critic/vf_loss": float(loss.detach()), "critic/vf_clipfrac": float(clipfrac),
            "critic/vpred_mean": float((values.detach() * mask).sum() / mask.sum().clamp(min=1))}

    def _update(self, batch: TokenBatch, loss_fn: Callable, epochs: int, shuffle: bool, micro_size: int,
                prefix: str) -> dict[str, float]:
        full, _ = self._gather(batch)
        mini_size = min(len(full), max(1, self.train_cfg.ppo_mini_batch_size * self.cfg.actor_rollout_ref.rollout.n
                                       // parallel_state.get_data_parallel_world_size()))
        lr = self.train_cfg.optim.lr * self._lr_factor(self.train_cfg.optim)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.model.train()
        outputs, norms = [], []
        for epoch in range(epochs):  # the same order on every rank of a model-parallel group
            order = torch.randperm(len(full), generator=torch.Generator().manual_seed(epoch)) if shuffle \
                else torch.arange(len(full))
            for start in range(0, len(full), mini_size):
                self.model.zero_grad_buffer()
                self.optimizer.zero_grad()
                mini = full.select(order[start:start + mini_size].tolist())
                outputs += self._run(mini, micro_size, loss_fn, forward_only=False)
                _, norm, _ = self.optimizer.step()
                norms.append(float("nan") if norm is None else float(norm))
        metrics = self._from_last_stage({k: sum(o[k] for o in outputs) / len(outputs) for k in outputs[0]}
                                        if outputs else None)
        metrics |= {f"{prefix}/grad_norm": sum(norms) / len(norms), f"{prefix}/lr": lr}
        if self.device == "cuda":
            free, total = torch.cuda.mem_get_info()
            metrics["perf/max_memory_allocated_gb"] = torch.cuda.max_memory_allocated() / 2**30
            metrics["perf/gpu_memory_used_gb"] = (total - free) / 2**30
        self.step += 1
        return metrics

    # data and results across the model-parallel group ----------------------------------------------------------
    def _gather(self, batch: TokenBatch) -> tuple[TokenBatch, slice]:
        """The slices of every rank of this model-parallel group, concatenated; and where this rank's rows are."""
        group = parallel_state.get_model_parallel_group()
        size, index = dist.get_world_size(group), dist.get_rank(group)
        if size == 1:
            return batch, slice(None)
        fields: dict[str, Any] = {}
        for name, value in vars(batch).items():
            if isinstance(value, torch.Tensor):
                local = value.to(self.device).contiguous()
                parts = [torch.empty_like(local) for _ in range(size)]
                dist.all_gather(parts, local, group=group)
                fields[name] = torch.cat(parts).cpu()
        return TokenBatch(**fields), slice(index * len(batch), (index + 1) * len(batch))

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
        shards = _GatheredShards(self._weight_layout(), dict(self.module.named_parameters()), self.device)
        config = self.hf_config
        if self.role == "critic":
            config = copy.deepcopy(config)
            config.tie_word_embeddings = True  # no vocabulary head to convert: the value head follows
        yield from iter_megatron_to_hf(shards, config, layout=megatron_layout())
        if self.role == "critic":
            yield "score.weight", shards[0][_OUTPUT]

    def _weight_layout(self) -> dict[str, _Entry]:
        """Every parameter of the whole model under its single-stage megatron name (stages hold consecutive
        layers, numbered from 0 within a stage); the stages exchange their entries once."""
        if self._layout is None:
            stage = parallel_state.get_pipeline_model_parallel_rank()
            per_stage = self.module.config.num_layers // self.pp
            local = {}
            for name, param in self.module.named_parameters():
                if name == _OUTPUT and self.hf_config.tie_word_embeddings and self.role != "critic":
                    continue  # the last stage's copy of a tied embedding
                parts = name.split(".")
                if name.startswith("decoder.layers."):
                    parts[2] = str(int(parts[2]) + stage * per_stage)
                local[".".join(parts)] = _Entry(stage, name, tuple(param.shape), param.dtype,
                                                bool(getattr(param, "tensor_model_parallel", False)))
            stages = [local]
            if self.pp > 1:
                stages = [None] * self.pp
                dist.all_gather_object(stages, local, group=parallel_state.get_pipeline_model_parallel_group())
            self._layout = {k: _Entry(*v) for s in stages for k, v in s.items()}
        return self._layout

    def save_checkpoint(self, directory: Path) -> None:
        path = Path(directory) / "dist_ckpt"
        path.mkdir(parents=True, exist_ok=True)
        dist.barrier()
        dist_checkpointing.save(self._sharded_state(loading=False), str(path))
        if self.rank == 0:  # as verl writes it: the config and tokenizer beside the sharded weights
            self.hf_config.save_pretrained(Path(directory) / "huggingface")
            load_tokenizer(self.model_cfg).save_pretrained(Path(directory) / "huggingface")

    @torch.no_grad()  # the optimizer copies into views of fp32 parameters
    def load_checkpoint(self, directory: Path) -> None:
        path = Path(directory) / "dist_ckpt"
        if not (path / "metadata.json").exists():
            raise FileNotFoundError(f"{path} holds no megatron distributed checkpoint (metadata.json is missing)")
        state = dist_checkpointing.load(self._sharded_state(loading=True), str(path))
        self.module.load_state_dict(state["model"])
        if self.optimizer is not None:
            self.optimizer.load_state_dict(state["optimizer"])
            _restore_adam_steps(self.optimizer)
            self.step = int(state["lr_step"])

    def _sharded_state(self, loading: bool) -> dict[str, Any]:
        metadata = dict(_CHECKPOINT_FORMAT)  # megatron adds its process groups to it
        model = self.module.sharded_state_dict(metadata=metadata)
        state: dict[str, Any] = {"model": model, "lr_step": self.step}
        if self.optimizer is not None:
            state["optimizer"] = self.optimizer.sharded_state_dict(model, is_loading=loading, metadata=metadata)
        return state

    def save_hf(self, directory: Path) -> None:
        """Every rank gathers; rank 0 writes `save_pretrained` of a model built from the config (on the meta
        device: it only names the tensors), and the tokenizer."""
        state = {name: tensor.cpu() if self.rank == 0 else None for name, tensor in self.named_weights()}
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
    split: bool  # split over the tensor-parallel ranks (else replicated)


class _GatheredShards:
    """The tensor-parallel shards of the whole model as `iter_megatron_to_hf` reads them (`shards[r][name]`):
    each tensor is gathered from the ranks that hold it when first read, and only the latest one is kept."""

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
        here = parallel_state.get_pipeline_model_parallel_rank() == entry.stage
        mine = self.params[entry.local_name].detach() if here else \
            torch.empty(entry.shape, dtype=entry.dtype, device=self.device)
        pieces = [mine]
        if entry.split and self.size > 1:
            pieces = [torch.empty_like(mine) for _ in range(self.size)]
            if here:
                dist.all_gather(pieces, mine.contiguous(), group=parallel_state.get_tensor_model_parallel_group())
        if parallel_state.get_pipeline_model_parallel_world_size() > 1:
            group = parallel_state.get_pipeline_model_parallel_group()
            for piece in pieces:  # from the owning stage to the others of each pipeline group
                dist.broadcast(piece, src=dist.get_global_rank(group, entry.stage), group=group)
        return pieces if len(pieces) == self.size else pieces * self.size


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


def _times(result: tuple[torch.Tensor, Any], factor: int) -> tuple[torch.Tensor, Any]:
    return result[0] * factor, result[1]


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
    if (megatron.virtual_pipeline_model_parallel_size or 1) > 1:
        raise ValueError("virtual_pipeline_model_parallel_size is not supported by the Megatron engine: leave it "
                         "unset")
    if parallel_state.model_parallel_is_initialized():
        return
    parallel_state.initialize_model_parallel(tensor_model_parallel_size=megatron.tensor_model_parallel_size,
                                             pipeline_model_parallel_size=megatron.pipeline_model_parallel_size)
    if device == "cuda":
        tensor_parallel.model_parallel_cuda_manual_seed(megatron.seed)
