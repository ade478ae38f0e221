"""The FSDP2 training engine: one rank's policy, reference or critic, sharded with `fully_shard`.

Sharding: each decoder layer, then the root, over the default process group (gloo on CPU, NCCL on GPU), which
the worker creates before building engines. Without a process group (a script, a notebook) the engine runs the
plain module unsharded on one device: the same code path minus the collectives, so nothing has to fake a world.

Precision: on GPU the actor's and critic's parameters stay fp32 (the optimizer's master copy) and compute runs in
bf16 through `MixedPrecisionPolicy` with fp32 gradient reduction; the reference, which never trains, keeps bf16
parameters. CPU runs fp32 throughout.

Offload: `param_offload` (or verl's `offload_policy`) keeps the sharded parameters, their gradients and the
optimizer step on the CPU through FSDP2's `CPUOffloadPolicy`, which copies each layer to the device for its
compute (pinned memory on GPU). `optimizer_offload` alone keeps the optimizer state on the CPU between steps and
brings it to the device for the step. Both give the same results as without (tested on CPU at world size 2).

LoRA (`model.lora_rank` > 0, the actor only): `engines.lora` wraps the model in peft adapters before sharding; the
optimizer takes only what requires gradients (the adapters), `named_weights` merges the adapters into the base for
the rollout, and checkpoints add the adapter in PEFT's format (`lora_adapter/`), which `save_hf` writes alone.

Ulysses sequence parallelism (`ulysses_sequence_parallel_size` sp > 1): `engines.ulysses`. The world forms
world / sp data-parallel replicas of sp consecutive ranks, which are given the same rows (the trainer sends each
group one chunk); `data_parallel_size` is world / sp, `all_reduce_*` run over the replicas, and FSDP still shards
over the whole world.

The update itself is not here: it is `engines.update`, shared with the Megatron engine. This file only shards,
runs forwards and backwards of the micro-batches it is given, and steps AdamW. Log-probs use
`logits / temperature`, the distribution the rollout samples.

Checkpoints are verl's layout (`model_world_size_N_rank_K.pt`, `optim_...`, `extra_state_...`, `huggingface/`):
each rank saves its own DTensor shards, so `rlc upload` and verl's merger read them, and resuming needs the same
world size.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from rlc_runtime.algorithms.losses import entropy_from_logits, log_probs_from_logits, sum_pi_squared_from_logits
from rlc_runtime.batch import TokenBatch
from rlc_runtime.engines import lora, ulysses
from rlc_runtime.engines.base import MicroFn, cpu_results
from rlc_runtime.engines.optim import build_optimizer
from rlc_runtime.engines.packing import packing_pays, response_logits, use_packed_attention
from rlc_runtime.models import load_causal_lm, load_tokenizer

ROLES = ("actor", "ref", "critic")


class FSDPEngine:
    """One rank's `role` (actor, ref or critic) of the resolved config `cfg`, on `device`."""

    equal_micro_batches = False

    def __init__(self, cfg: Any, role: str, device: str) -> None:
        if role not in ROLES:
            raise ValueError(f"role {role!r} is not one of {', '.join(ROLES)}")
        arf = cfg.actor_rollout_ref
        self.role, self.device = role, device
        self.model_cfg = cfg.critic.model if role == "critic" else arf.model
        self.train_cfg = {"actor": arf.actor, "ref": arf.ref, "critic": cfg.critic}[role]
        self.temperature = arf.rollout.temperature or 1.0
        self.sharded = dist.is_initialized()
        fsdp = self._fsdp_config()
        self.offloads_params = self.sharded and bool(fsdp.param_offload or fsdp.offload_policy)
        self.offloads_optimizer = bool(fsdp.optimizer_offload) and not self.offloads_params and role != "ref"
        self.rank = dist.get_rank() if self.sharded else 0
        self.world_size = dist.get_world_size() if self.sharded else 1
        self.sp = self.sequence_parallel_size = self.train_cfg.ulysses_sequence_parallel_size or 1
        self.sp_group, self.dp_group = self._sequence_parallel_groups()
        self.data_parallel_size = self.world_size // self.sp
        trains = role != "ref"
        dtype = torch.bfloat16 if device == "cuda" and not trains else torch.float32
        model = load_causal_lm(self.model_cfg, dtype, "cpu", for_critic=role == "critic")
        wants_packing = bool(self.model_cfg.use_remove_padding) and self.sp == 1
        if wants_packing:
            use_packed_attention(model, device, self.model_cfg.override_config)
        self.packed = wants_packing and packing_pays(model)
        if self.sp > 1:
            ulysses.check_model(model, self.sp)
            ulysses.use_ulysses_attention(model)
        self.tied = role != "critic" and bool(getattr(model.config, "tie_word_embeddings", False))
        checkpointing = trains and self.model_cfg.enable_gradient_checkpointing
        if checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.lora = role == "actor" and lora.lora_enabled(self.model_cfg)
        if self.lora:
            model = lora.add_adapters(model, self.model_cfg, checkpointing)
        self.model = self._shard(model) if self.sharded else model.to(device)
        self.optimizer = None
        if trains:  # only what requires gradients: with LoRA, the adapters alone
            trained = [p for p in self.model.parameters() if p.requires_grad]
            on_gpu = all(p.device.type == "cuda" for p in trained)  # not when offloaded
            self.optimizer = build_optimizer(trained, self.train_cfg.optim, on_gpu)

    def _sequence_parallel_groups(self) -> tuple[Any, Any]:
        """(the sequence-parallel group, the data-parallel group), or (None, None) without Ulysses."""
        if self.sp == 1:
            return None, None
        if self.world_size % self.sp:
            raise ValueError(f"{self.role}: ulysses_sequence_parallel_size {self.sp} must divide the world size "
                             f"{self.world_size} (a process group is needed: the worker creates it)")
        from torch.distributed.device_mesh import init_device_mesh

        mesh = init_device_mesh(self.device, (self.world_size // self.sp, self.sp), mesh_dim_names=("dp", "sp"))
        return mesh.get_group("sp"), mesh.get_group("dp")

    def _fsdp_config(self) -> Any:
        if self.role == "critic":
            return self.model_cfg.fsdp_config or self.train_cfg.fsdp
        return self.train_cfg.fsdp_config

    def _shard(self, model: torch.nn.Module) -> torch.nn.Module:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, fully_shard

        fsdp = self._fsdp_config()
        mesh = init_device_mesh(self.device, (self.world_size,))
        options: dict[str, Any] = {"mesh": mesh, "reshard_after_forward": fsdp.reshard_after_forward}
        if self.offloads_params:
            options["offload_policy"] = CPUOffloadPolicy(pin_memory=self.device == "cuda")
        if self.device == "cuda":
            chosen = fsdp.mixed_precision or {}
            options["mp_policy"] = MixedPrecisionPolicy(
                param_dtype=getattr(torch, chosen.get("param_dtype", "bfloat16")),
                reduce_dtype=getattr(torch, chosen.get("reduce_dtype", "float32")))
        for layer in _decoder_layers(model):
            fully_shard(layer, **options)
        fully_shard(model, **options)  # moves what is still on the CPU onto the mesh's device
        return model

    # the contract (engines.base.TrainEngine) ---------------------------------------------------------------------
    def data_batch(self, batch: TokenBatch) -> tuple[TokenBatch, slice]:
        """This rank's rows as they are (under Ulysses, the rows its sequence-parallel group shares). Every rank must
        run as many forwards (FSDP gathers are collectives)."""
        if self.sharded:
            total = float(self.all_reduce_sum(torch.tensor([len(batch)], dtype=torch.float64)))
            if total != len(batch) * self.data_parallel_size:
                raise ValueError(f"rank {self.rank} holds {len(batch)} rows but the ranks' batches differ in size; "
                                 "split batches evenly over ranks (TokenBatch.chunk)")
        return batch, slice(None)

    def forward_backward(self, parts: list[TokenBatch], fn: MicroFn, backward: bool) -> list[dict[str, Any]]:
        self.model.train(backward)
        results = []
        with torch.set_grad_enabled(backward):
            for part in parts:
                outputs = (ulysses.ShardedOutputs(self.model, part, self.device, self.sp_group, self.temperature)
                           if self.sp > 1 else _Outputs(self, part))
                loss, found = fn(part, outputs)
                if backward:
                    loss.backward()
                results.append(cpu_results(found))
        return results

    def optimizer_step(self, lr: float, max_norm: float) -> float:
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)
        norm = norm.full_tensor() if hasattr(norm, "full_tensor") else norm
        if torch.isfinite(norm):
            self._optimizer_state_to(self.device)
            self.optimizer.step()
            if self.offloads_optimizer:
                self._optimizer_state_to("cpu")
        self.optimizer.zero_grad(set_to_none=True)
        return float(norm)

    def _optimizer_state_to(self, device: str) -> None:
        """Adam's moments (not the step counts, which torch keeps on the CPU) onto `device`."""
        if not self.offloads_optimizer:
            return
        for state in self.optimizer.state.values():
            for key, value in state.items():
                if isinstance(value, torch.Tensor) and key != "step":
                    state[key] = value.to(device)

    def resident(self, training: bool) -> contextlib.AbstractContextManager[None]:
        """Nothing to do: FSDP2's offload policy moves each layer for its compute, and the optimizer state moves
        around its step (`optimizer_step`)."""
        return contextlib.nullcontext()

    def all_reduce_sum(self, values: torch.Tensor) -> torch.Tensor:
        return self._all_reduce(values, dist.ReduceOp.SUM)

    def all_reduce_max(self, values: torch.Tensor) -> torch.Tensor:
        return self._all_reduce(values, dist.ReduceOp.MAX)

    def _all_reduce(self, values: torch.Tensor, op: dist.ReduceOp.RedOpType) -> torch.Tensor:
        if not self.sharded:
            return values
        values = values.to(self.device)
        dist.all_reduce(values, op=op, group=self.dp_group)
        return values.cpu()

    # weights and checkpoints -----------------------------------------------------------------------------------
    def named_weights(self) -> Iterator[tuple[str, torch.Tensor]]:
        """Full tensors one at a time under HF names (a collective when sharded: every rank must iterate).
        A tied output embedding is left out: it is the input embedding."""
        weights = self._full_state()
        if self.lora:  # the rollout runs the base with the adapters folded in
            weights = lora.merged_weights(weights, lora.scalings(self.model))
        for name, tensor in weights:
            if not (self.tied and name == "lm_head.weight"):
                yield name, tensor

    def _full_state(self, adapters_only: bool = False) -> Iterator[tuple[str, torch.Tensor]]:
        for name, tensor in self.model.state_dict().items():
            if adapters_only and not lora.is_adapter(name):
                continue
            full = tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor
            yield name, full.detach()

    def _files(self, directory: Path) -> dict[str, Path]:
        tag = f"world_size_{self.world_size}_rank_{self.rank}.pt"
        return {kind: Path(directory) / f"{kind}_{tag}" for kind in ("model", "optim", "extra_state")}

    def save_checkpoint(self, directory: Path, extra: dict[str, Any]) -> None:
        """This rank's shards of the model and optimizer, and `extra`; rank 0 adds `huggingface/` (config and
        tokenizer) for the tools that consolidate verl checkpoints."""
        files = self._files(directory)
        Path(directory).mkdir(parents=True, exist_ok=True)
        torch.save(self.model.state_dict(), files["model"])
        if self.optimizer is not None:
            torch.save(self.optimizer.state_dict(), files["optim"])
        torch.save({"update": extra}, files["extra_state"])
        if self.lora:
            self._save_adapter(Path(directory) / lora.ADAPTER_DIR)
        if self.rank == 0:
            hf = Path(directory) / "huggingface"
            self.model.config.save_pretrained(hf)
            load_tokenizer(self.model_cfg).save_pretrained(hf)

    def load_checkpoint(self, directory: Path) -> dict[str, Any]:
        import torch.distributed.tensor  # noqa: F401  (registers DTensor for weights-only loading)

        files = self._files(directory)
        if not files["model"].exists():
            found = sorted(p.name for p in Path(directory).glob("model_world_size_*"))
            raise FileNotFoundError(f"{files['model']} is missing; the checkpoint holds {found or 'no model files'} "
                                    f"(resuming needs the world size it was written with, here "
                                    f"{self.world_size})")
        self.model.load_state_dict(torch.load(files["model"], map_location=self.device, weights_only=True))
        if self.optimizer is not None and files["optim"].exists():
            self.optimizer.load_state_dict(torch.load(files["optim"], map_location=self.device, weights_only=True))
        if not files["extra_state"].exists():
            return {}
        return torch.load(files["extra_state"], weights_only=True).get("update", {})

    def save_hf(self, directory: Path) -> None:
        """A Hugging Face folder (safetensors, config, generation config, tokenizer), written by rank 0; every
        rank must call it (the weights are gathered)."""
        if self.lora:  # the adapter in PEFT's format, what `PeftModel.from_pretrained` loads
            self._save_adapter(Path(directory))
            if self.rank == 0:
                load_tokenizer(self.model_cfg).save_pretrained(directory)
            return
        state = {name: tensor.cpu() for name, tensor in self.named_weights()}
        if self.rank != 0:
            return
        Path(directory).mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(directory, state_dict=state)
        load_tokenizer(self.model_cfg).save_pretrained(directory)

    def _save_adapter(self, directory: Path) -> None:
        """A collective (the adapters are gathered); rank 0 writes."""
        tensors = lora.adapter_tensors(self._full_state(adapters_only=True))
        if self.rank == 0:
            lora.save_adapter(self.model, tensors, directory)


class _Outputs:
    """One micro-batch's forward, computed on first use: the logits once, then log-probs and entropy from them."""

    def __init__(self, engine: FSDPEngine, part: TokenBatch) -> None:
        self.engine, self.part = engine, part
        self._logits: torch.Tensor | None = None

    def _scaled_logits(self) -> torch.Tensor:
        if self._logits is None:
            e = self.engine
            self._logits = response_logits(e.model, self.part, e.device, e.packed, e.temperature)
        return self._logits

    def log_probs(self) -> torch.Tensor:
        return log_probs_from_logits(self._scaled_logits(), self.part.responses.to(self.engine.device))

    def entropy(self, grad: bool) -> torch.Tensor:
        with torch.set_grad_enabled(grad and torch.is_grad_enabled()):
            return entropy_from_logits(self._scaled_logits())

    def sum_pi_squared(self) -> torch.Tensor:
        return sum_pi_squared_from_logits(self._scaled_logits().detach())

    def values(self) -> torch.Tensor:
        e = self.engine
        return response_logits(e.model, self.part, e.device, e.packed)[..., 0]


def _decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The repeated blocks, found structurally: the largest `ModuleList` (every HF decoder keeps its layers in
    one), so no per-family table of layer classes is needed."""
    lists = [m for m in model.modules() if isinstance(m, torch.nn.ModuleList)]
    return list(max(lists, key=len)) if lists else []

