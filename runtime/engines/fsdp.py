"""The FSDP2 training engine: one rank's policy, reference or critic, sharded with `fully_shard`.

Sharding: each decoder layer, then the root, over the default process group (gloo on CPU, NCCL on GPU), which
the worker creates before building engines. Without a process group (a script, a notebook) the engine runs the
plain module unsharded on one device: the same code path minus the collectives, so nothing has to fake a world.

Precision: on GPU the actor's and critic's parameters stay fp32 (the optimizer's master copy) and compute runs in
bf16 through `MixedPrecisionPolicy` with fp32 gradient reduction; the reference, which never trains, keeps bf16
parameters. CPU runs fp32 throughout.

Losses are verl's (rlc_runtime.algorithms.losses). Gradient accumulation reproduces the loss of the whole
mini-batch on one rank exactly: each micro-batch's aggregated loss is rescaled by its share of the global
mini-batch (its tokens for `token-mean`, its sequences for the `seq-mean-*` modes; `seq-mean-token-sum-norm` is
a plain sum), times the world size that FSDP's gradient averaging divides by. So world size 1 and 2 take the
same optimizer step on the same data. Log-probs use `logits / temperature`, the distribution the rollout samples.

Checkpoints are verl's layout (`model_world_size_N_rank_K.pt`, `optim_...`, `extra_state_...`, `huggingface/`):
each rank saves its own DTensor shards, so `rlc upload` and verl's merger read them, and resuming needs the same
world size.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from rlc_runtime.algorithms.losses import (
    agg_loss,
    entropy_from_logits,
    kl_penalty,
    log_probs_from_logits,
    value_loss,
)
from rlc_runtime.algorithms.policy_losses import compute_policy_loss
from rlc_runtime.batch import TokenBatch
from rlc_runtime.engines.optim import build_optimizer
from rlc_runtime.engines.packing import packing_pays, response_logits
from rlc_runtime.models import load_causal_lm, load_tokenizer

ROLES = ("actor", "ref", "critic")
SUM_MODE = "seq-mean-token-sum-norm"  # a sum over sequences (over a constant length): micro-batch losses add up


class FSDPEngine:
    """`model_cfg`: ModelConfig; `train_cfg`: Actor, Ref or Critic; `algorithm`: the Algorithm section (kept
    for symmetry with the Megatron engine; the KL-loss and entropy settings live in the actor section, as in verl).

    `temperature` is the rollout's (log-probs are of `logits / temperature`); `mini_batch_size` is rows per rank
    per optimizer step (ppo_mini_batch_size x rollout.n / data-parallel size), None for one step per update.
    """

    def __init__(self, model_cfg: Any, train_cfg: Any, role: str, algorithm: Any, device: str, *,
                 temperature: float = 1.0, mini_batch_size: int | None = None) -> None:
        if role not in ROLES:
            raise ValueError(f"role {role!r} is not one of {', '.join(ROLES)}")
        self.model_cfg, self.train_cfg, self.role, self.algorithm = model_cfg, train_cfg, role, algorithm
        self.device, self.temperature, self.mini_batch_size = device, temperature or 1.0, mini_batch_size
        self.sharded = dist.is_initialized()
        self.rank = dist.get_rank() if self.sharded else 0
        self.world = dist.get_world_size() if self.sharded else 1
        trains = role != "ref"
        dtype = torch.bfloat16 if device == "cuda" and not trains else torch.float32
        model = load_causal_lm(model_cfg, dtype, "cpu", for_critic=role == "critic")
        self.packed = bool(model_cfg.use_remove_padding) and packing_pays(model)
        self.tied = role != "critic" and bool(getattr(model.config, "tie_word_embeddings", False))
        if trains and model_cfg.enable_gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.model = self._shard(model) if self.sharded else model.to(device)
        self.optimizer = self.scheduler = None
        if trains:
            on_gpu = all(p.device.type == "cuda" for p in self.model.parameters())  # not when offloaded
            self.optimizer, self.scheduler = build_optimizer(self.model.parameters(), train_cfg.optim, on_gpu)

    def _fsdp_config(self) -> Any:
        if self.role == "critic":
            return self.model_cfg.fsdp_config or self.train_cfg.fsdp
        return self.train_cfg.fsdp_config

    def _shard(self, model: torch.nn.Module) -> torch.nn.Module:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, fully_shard

        fsdp = self._fsdp_config()
        mesh = init_device_mesh(self.device, (self.world,))
        options: dict[str, Any] = {"mesh": mesh, "reshard_after_forward": fsdp.reshard_after_forward}
        if self.device == "cuda":
            chosen = fsdp.mixed_precision or {}
            options["mp_policy"] = MixedPrecisionPolicy(
                param_dtype=getattr(torch, chosen.get("param_dtype", "bfloat16")),
                reduce_dtype=getattr(torch, chosen.get("reduce_dtype", "float32")))
            if fsdp.param_offload or fsdp.offload_policy:
                options["offload_policy"] = CPUOffloadPolicy()
        for layer in _decoder_layers(model):
            fully_shard(layer, **options)
        fully_shard(model, **options)  # moves what is still on the CPU onto the mesh's device
        return model

    # forward passes --------------------------------------------------------------------------------------------
    def _log_probs(self, part: TokenBatch, with_entropy: bool,
                   entropy_grad: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        logits = response_logits(self.model, part, self.device, self.packed, self.temperature)
        mask = part.response_mask.to(self.device)
        log_probs = log_probs_from_logits(logits, part.responses.to(self.device)) * mask
        if not with_entropy:
            return log_probs, None
        with torch.set_grad_enabled(entropy_grad and torch.is_grad_enabled()):
            return log_probs, entropy_from_logits(logits) * mask

    def _values(self, part: TokenBatch) -> torch.Tensor:
        values = response_logits(self.model, part, self.device, self.packed)[..., 0]
        return values * part.response_mask.to(self.device)

    @torch.no_grad()
    def compute_log_probs(self, batch: TokenBatch, micro_batch_size: int,
                          with_entropy: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """[B, R] log-probs (0 on padding) of the responses, and the entropy when asked."""
        self.model.eval()
        parts = [self._log_probs(part, with_entropy) for part in self._micro(batch, micro_batch_size)]
        log_probs = torch.cat([p[0] for p in parts]).cpu()
        return log_probs, torch.cat([p[1] for p in parts]).cpu() if with_entropy else None

    @torch.no_grad()
    def compute_values(self, batch: TokenBatch, micro_batch_size: int) -> torch.Tensor:
        self.model.eval()
        return torch.cat([self._values(part) for part in self._micro(batch, micro_batch_size)]).cpu()

    # updates ---------------------------------------------------------------------------------------------------
    def update_policy(self, batch: TokenBatch) -> dict[str, float]:
        if self.role != "actor":
            raise RuntimeError(f"update_policy on the {self.role} engine")
        actor = self.train_cfg
        if actor.use_kl_loss and batch.ref_log_probs is None:
            raise ValueError("use_kl_loss is on but the batch carries no ref_log_probs")
        return self._update(batch, self._policy_step, actor.ppo_epochs, actor.loss_agg_mode, "actor")

    def _policy_step(self, part: TokenBatch, scale: float) -> dict[str, float]:
        actor, device = self.train_cfg, self.device
        mask = part.response_mask.to(device)
        log_prob, entropy = self._log_probs(part, with_entropy=True, entropy_grad=actor.entropy_coeff != 0)
        old = part.old_log_probs.to(device) if part.old_log_probs is not None else log_prob.detach()
        weights = part.rollout_is_weights.to(device) if part.rollout_is_weights is not None else None
        pg_loss, pg_metrics = compute_policy_loss(
            actor.policy_loss.loss_mode, old, log_prob, part.advantages.to(device), mask, actor.loss_agg_mode, actor,
            weights)
        entropy_loss = agg_loss(entropy, mask, actor.loss_agg_mode)
        loss = pg_loss - actor.entropy_coeff * entropy_loss
        metrics = {"actor/pg_loss": pg_loss.item(), "actor/entropy": entropy_loss.item(),
                   **{k: v.item() for k, v in pg_metrics.items()}}
        if actor.use_kl_loss:
            kl = agg_loss(kl_penalty(log_prob, part.ref_log_probs.to(device), actor.kl_loss_type), mask,
                          actor.loss_agg_mode)
            loss = loss + actor.kl_loss_coef * kl
            metrics |= {"actor/kl_loss": kl.item(), "actor/kl_coef": actor.kl_loss_coef}
        (loss * scale).backward()
        return metrics

    def update_critic(self, batch: TokenBatch) -> dict[str, float]:
        if self.role != "critic":
            raise RuntimeError(f"update_critic on the {self.role} engine")
        critic = self.train_cfg
        return self._update(batch, self._value_step, critic.ppo_epochs, critic.loss_agg_mode, "critic")

    def _value_step(self, part: TokenBatch, scale: float) -> dict[str, float]:
        critic, mask = self.train_cfg, part.response_mask.to(self.device)
        values = self._values(part)
        loss, clipfrac = value_loss(values, part.returns.to(self.device), part.values.to(self.device), mask,
                                    critic.cliprange_value, critic.loss_agg_mode)
        (loss * scale).backward()
        return {"critic/vf_loss": loss.item(), "critic/vf_clipfrac": clipfrac.item(),
                "critic/vpred_mean": ((values * mask).sum() / mask.sum().clamp(min=1)).item()}

    def _update(self, batch: TokenBatch, step: Callable[[TokenBatch, float], dict[str, float]], epochs: int,
                mode: str, prefix: str) -> dict[str, float]:
        """`epochs` passes over mini-batches, one optimizer step each; metrics are means over micro-batches."""
        self.model.train()
        size = min(self.mini_batch_size or len(batch), len(batch))
        sums: dict[str, list[float]] = {}
        norms: list[float] = []
        lr = self.scheduler.get_last_lr()[0]
        for epoch in range(epochs):
            order = self._order(len(batch), epoch)
            for start in range(0, len(batch), size):
                mini = batch.select(order[start:start + size])
                total = self._all_sum(_weight(mini, mode))
                for part in self._micro(mini, self.train_cfg.ppo_micro_batch_size_per_gpu or len(mini)):
                    scale = self.world * (1.0 if mode == SUM_MODE else _weight(part, mode) / max(total, 1.0))
                    for key, value in step(part, scale).items():
                        sums.setdefault(key, []).append(value)
                norms.append(self._clip_and_step())
        self.scheduler.step()
        metrics = self._mean_over_ranks({key: sum(values) / len(values) for key, values in sums.items()})
        metrics |= {f"{prefix}/grad_norm": sum(norms) / len(norms), f"{prefix}/lr": lr}
        if self.device == "cuda":
            metrics["perf/max_memory_allocated_gb"] = torch.cuda.max_memory_allocated() / 2**30
        return metrics

    def _order(self, count: int, epoch: int) -> list[int]:
        if not getattr(self.train_cfg, "shuffle", False):
            return list(range(count))
        # Seeded by the update count, so that a resumed run shuffles as the uninterrupted one would have.
        seed = (self.train_cfg.data_loader_seed or 0) + 1000 * self.scheduler.last_epoch + epoch
        return torch.randperm(count, generator=torch.Generator().manual_seed(seed)).tolist()

    def _clip_and_step(self) -> float:
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.train_cfg.grad_clip)
        norm = norm.full_tensor() if hasattr(norm, "full_tensor") else norm
        if torch.isfinite(norm):  # a non-finite norm skips the step (as verl) rather than poisoning the weights
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(norm)

    def _mean_over_ranks(self, metrics: dict[str, float]) -> dict[str, float]:
        """Every rank returns the same, global numbers (the grad norm and lr are global already)."""
        if not self.sharded:
            return metrics
        keys = sorted(metrics)
        values = torch.tensor([metrics[k] for k in keys], dtype=torch.float64, device=self.device)
        dist.all_reduce(values)
        return dict(zip(keys, (values / self.world).tolist(), strict=True))

    def _all_sum(self, value: float) -> float:
        if not self.sharded:
            return value
        tensor = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor)
        return float(tensor.item())

    def _micro(self, batch: TokenBatch, size: int) -> list[TokenBatch]:
        """Micro-batches of `size` rows. Every rank must run as many forwards (FSDP gathers are collectives)."""
        if self.sharded and self._all_sum(len(batch)) != len(batch) * self.world:
            raise ValueError(f"rank {self.rank} holds {len(batch)} rows but the ranks' batches differ in size; "
                             "split batches evenly over ranks (TokenBatch.chunk)")
        size = max(1, size or len(batch))
        return [batch.select(list(range(i, min(i + size, len(batch))))) for i in range(0, len(batch), size)]

    # weights and checkpoints -----------------------------------------------------------------------------------
    def named_weights(self) -> Iterator[tuple[str, torch.Tensor]]:
        """Full tensors one at a time under HF names (a collective when sharded: every rank must iterate).
        A tied output embedding is left out: it is the input embedding."""
        for name, tensor in self.model.state_dict().items():
            if self.tied and name == "lm_head.weight":
                continue
            full = tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor
            yield name, full.detach()

    def _files(self, directory: Path) -> dict[str, Path]:
        tag = f"world_size_{self.world}_rank_{self.rank}.pt"
        return {kind: Path(directory) / f"{kind}_{tag}" for kind in ("model", "optim", "extra_state")}

    def save_checkpoint(self, directory: Path) -> None:
        """This rank's shards of the model, optimizer and schedule; rank 0 adds `huggingface/` (config and
        tokenizer) for the tools that consolidate verl checkpoints."""
        files = self._files(directory)
        Path(directory).mkdir(parents=True, exist_ok=True)
        torch.save(self.model.state_dict(), files["model"])
        if self.optimizer is not None:
            torch.save(self.optimizer.state_dict(), files["optim"])
            torch.save({"lr_scheduler": self.scheduler.state_dict()}, files["extra_state"])
        if self.rank == 0:
            hf = Path(directory) / "huggingface"
            self.model.config.save_pretrained(hf)
            load_tokenizer(self.model_cfg).save_pretrained(hf)

    def load_checkpoint(self, directory: Path) -> None:
        import torch.distributed.tensor  # noqa: F401  (registers DTensor for weights-only loading)

        files = self._files(directory)
        if not files["model"].exists():
            found = sorted(p.name for p in Path(directory).glob("model_world_size_*"))
            raise FileNotFoundError(f"{files['model']} is missing; the checkpoint holds {found or 'no model files'} "
                                    f"(resuming needs the world size it was written with, here {self.world})")
        self.model.load_state_dict(torch.load(files["model"], map_location=self.device, weights_only=True))
        if self.optimizer is not None and files["optim"].exists():
            self.optimizer.load_state_dict(torch.load(files["optim"], map_location=self.device, weights_only=True))
            extra = torch.load(files["extra_state"], weights_only=True)
            self.scheduler.load_state_dict(extra["lr_scheduler"])

    def save_hf(self, directory: Path) -> None:
        """A Hugging Face folder (safetensors, config, generation config, tokenizer), written by rank 0; every
        rank must call it (the weights are gathered)."""
        state = {name: tensor.cpu() for name, tensor in self.named_weights()}
        if self.rank != 0:
            return
        Path(directory).mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(directory, state_dict=state)
        load_tokenizer(self.model_cfg).save_pretrained(directory)


def _weight(batch: TokenBatch, mode: str) -> float:
    """What a mean-type `mode` averages over: tokens for token-mean, sequences that have any response token for
    the seq-mean modes (agg_loss leaves all-padding rows out of its means)."""
    if mode == "token-mean":
        return float(batch.response_mask.sum())
    return float((batch.response_mask.sum(-1) > 0).sum())


def _decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The repeated blocks, found structurally: the largest `ModuleList` (every HF decoder keeps its layers in
    one), so no per-family table of layer classes is needed."""
    lists = [m for m in model.modules() if isinstance(m, torch.nn.ModuleList)]
    return list(max(lists, key=len)) if lists else []

