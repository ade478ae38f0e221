"""The FSDP2 training engine: one rank's policy, reference or critic, sharded with `fully_shard`.

Each decoder layer and then the root module are sharded over the default process group (gloo on CPU, NCCL on
GPU); on GPU parameters stay fp32 (the optimizer's master copy) and compute runs in bf16 through
`MixedPrecisionPolicy`. Log-probs use `logits / temperature`, as the rollout samples them. Checkpoints are
written in verl's layout (`model_world_size_N_rank_K.pt`, `optim_...`, `extra_state_...`, `huggingface/`) so
that verl's tools and `rlc upload` read them, and rlc reads verl's.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from rlc_runtime.algorithms.losses import (
    agg_loss,
    entropy_from_logits,
    kl_penalty,
    log_probs_from_logits,
    policy_loss,
    value_loss,
)
from rlc_runtime.batch import TokenBatch
from rlc_runtime.models import load_causal_lm, load_tokenizer


class FSDPEngine:
    def __init__(self, cfg: Any, role: str, device: str) -> None:
        arf = cfg.actor_rollout_ref
        self.cfg, self.role, self.device = cfg, role, device
        self.train_cfg = {"actor": arf.actor, "ref": arf.ref, "critic": cfg.critic}[role]
        self.model_cfg = cfg.critic.model if role == "critic" else arf.model
        self.temperature = arf.rollout.temperature or 1.0
        self.rank = dist.get_rank() if dist.is_initialized() else 0
        self.world = dist.get_world_size() if dist.is_initialized() else 1
        model = load_causal_lm(self.model_cfg, torch.float32, for_critic=role == "critic").to(device)
        if self.model_cfg.enable_gradient_checkpointing and role != "ref":
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.model = self._shard(model) if dist.is_initialized() else model
        self.optimizer = self.scheduler = None
        if role != "ref":
            self.optimizer, self.scheduler = self._optimizer(self.train_cfg.optim)

    # setup -----------------------------------------------------------------------------------------------------
    def _shard(self, model: torch.nn.Module) -> torch.nn.Module:
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) \
            if self.device == "cuda" else MixedPrecisionPolicy()
        reshard = getattr(getattr(self.train_cfg, "fsdp_config", None) or self.cfg.critic.fsdp,
                          "reshard_after_forward", True)
        for layer in _decoder_layers(model):
            fully_shard(layer, mp_policy=policy, reshard_after_forward=reshard)
        fully_shard(model, mp_policy=policy, reshard_after_forward=reshard)
        return model

    def _optimizer(self, optim: Any) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
        optimizer = torch.optim.AdamW(self.model.parameters(), lr=optim.lr, betas=tuple(optim.betas),
                                      weight_decay=optim.weight_decay, fused=self.device == "cuda")
        total = max(1, optim.total_training_steps)
        warmup = optim.lr_warmup_steps if optim.lr_warmup_steps > 0 else int(optim.lr_warmup_steps_ratio * total)
        kind, floor, cycles = optim.lr_scheduler_type, optim.min_lr_ratio, optim.num_cycles

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / (warmup + 1)
            progress = min(1.0, (step - warmup) / max(1, total - warmup))
            if kind == "cosine":
                return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * 2 * cycles * progress))
            if kind == "linear":
                return floor + (1 - floor) * (1 - progress)
            return 1.0

        return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)

    # forward passes --------------------------------------------------------------------------------------------
    def _forward(self, batch: TokenBatch, with_entropy: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Log-probs (and entropy) of the response tokens, [b, R], from one micro-batch on this device."""
        response = batch.responses.to(self.device)
        output = self.model(input_ids=batch.input_ids.to(self.device),
                            attention_mask=batch.attention_mask.to(self.device),
                            position_ids=batch.position_ids.to(self.device), use_cache=False)
        logits = output.logits[:, batch.prompt_length - 1:-1].float() / self.temperature
        entropy = entropy_from_logits(logits) if with_entropy else None
        return log_probs_from_logits(logits, response), entropy

    def _values(self, batch: TokenBatch) -> torch.Tensor:
        output = self.model(input_ids=batch.input_ids.to(self.device),
                            attention_mask=batch.attention_mask.to(self.device),
                            position_ids=batch.position_ids.to(self.device), use_cache=False)
        return output.logits[:, batch.prompt_length - 1:-1, 0].float()

    @torch.no_grad()
    def compute_log_probs(self, batch: TokenBatch, micro_batch_size: int,
                          with_entropy: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        self.model.eval()
        parts = [self._forward(part, with_entropy) for part in _micro(batch, micro_batch_size)]
        log_probs = torch.cat([p[0] for p in parts]).cpu()
        entropy = torch.cat([p[1] for p in parts]).cpu() if with_entropy else None
        return log_probs, entropy

    @torch.no_grad()
    def compute_values(self, batch: TokenBatch, micro_batch_size: int) -> torch.Tensor:
        self.model.eval()
        return torch.cat([self._values(part) for part in _micro(batch, micro_batch_size)]).cpu()

    # updates ---------------------------------------------------------------------------------------------------
    def _mini_batch_size(self) -> int:
        rollout_n = self.cfg.actor_rollout_ref.rollout.n
        return max(1, self.train_cfg.ppo_mini_batch_size * rollout_n // self.world)

    def update_policy(self, batch: TokenBatch) -> dict[str, float]:
        actor = self.train_cfg
        return self._update(batch, lambda part, scale: self._policy_step(part, scale, actor),
                            actor.ppo_epochs, actor.shuffle, actor.ppo_micro_batch_size_per_gpu, "actor")

    def _policy_step(self, part: TokenBatch, scale: float, actor: Any) -> dict[str, float]:
        mask = part.response_mask.to(self.device)
        log_prob, entropy = self._forward(part, with_entropy=True)  # actor/entropy is reported every step
        pg_loss, clipfrac, ppo_kl, lower = policy_loss(
            part.old_log_probs.to(self.device), log_prob, part.advantages.to(self.device), mask,
            actor.clip_ratio_low, actor.clip_ratio_high, actor.clip_ratio_c, actor.loss_agg_mode)
        loss = pg_loss
        metrics = {"actor/pg_loss": pg_loss.item(), "actor/pg_clipfrac": clipfrac.item(), "actor/ppo_kl": ppo_kl.item(),
                   "actor/pg_clipfrac_lower": lower.item()}
        if entropy is not None:
            entropy_loss = agg_loss(entropy, mask, actor.loss_agg_mode)
            loss = loss - actor.entropy_coeff * entropy_loss
            metrics["actor/entropy"] = entropy_loss.item()
        if actor.use_kl_loss and part.ref_log_probs is not None:
            kl = agg_loss(kl_penalty(log_prob, part.ref_log_probs.to(self.device), actor.kl_loss_type), mask,
                          actor.loss_agg_mode)
            loss = loss + actor.kl_loss_coef * kl
            metrics |= {"actor/kl_loss": kl.item(), "actor/kl_coef": actor.kl_loss_coef}
        (loss * scale).backward()
        return metrics

    def update_critic(self, batch: TokenBatch) -> dict[str, float]:
        critic = self.train_cfg

        def step(part: TokenBatch, scale: float) -> dict[str, float]:
            mask = part.response_mask.to(self.device)
            values = self._values(part)
            loss, clipfrac = value_loss(values, part.returns.to(self.device), part.values.to(self.device), mask,
                                        critic.cliprange_value, critic.loss_agg_mode)
            (loss * scale).backward()
            return {"critic/vf_loss": loss.item(), "critic/vf_clipfrac": clipfrac.item(),
                    "critic/vpred_mean": (values * mask).sum().item() / max(1.0, mask.sum().item())}

        return self._update(batch, step, critic.ppo_epochs, critic.shuffle, critic.ppo_micro_batch_size_per_gpu,
                            "critic")

    def _update(self, batch: TokenBatch, step: Any, epochs: int, shuffle: bool, micro_size: int,
                prefix: str) -> dict[str, float]:
        self.model.train()
        mini_size = min(self._mini_batch_size(), len(batch))
        sums: dict[str, float] = {}
        norms: list[float] = []
        count = 0
        for epoch in range(epochs):
            order = torch.randperm(len(batch), generator=torch.Generator().manual_seed(epoch)) if shuffle \
                else torch.arange(len(batch))
            for start in range(0, len(batch), mini_size):
                mini = batch.select(order[start:start + mini_size].tolist())
                for part in _micro(mini, micro_size):
                    for key, value in step(part, len(part) / len(mini)).items():
                        sums[key] = sums.get(key, 0.0) + value
                    count += 1
                norms.append(self._clip_and_step())
        metrics = {key: value / count for key, value in sums.items()}
        metrics[f"{prefix}/grad_norm"] = sum(norms) / len(norms)
        metrics[f"{prefix}/lr"] = self.scheduler.get_last_lr()[0]
        if self.device == "cuda":
            free, total = torch.cuda.mem_get_info()
            metrics["perf/max_memory_allocated_gb"] = torch.cuda.max_memory_allocated() / 2**30
            metrics["perf/gpu_memory_used_gb"] = (total - free) / 2**30
        self.scheduler.step()
        return metrics

    def _clip_and_step(self) -> float:
        limit = self.train_cfg.grad_clip
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), limit)
        norm = norm.full_tensor() if hasattr(norm, "full_tensor") else norm
        if torch.isfinite(norm):
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(norm)

    # weights and checkpoints -----------------------------------------------------------------------------------
    def named_weights(self) -> Iterator[tuple[str, torch.Tensor]]:
        """Full tensors one at a time (a collective under FSDP: every rank must iterate)."""
        for name, tensor in self.model.state_dict().items():
            full = tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor
            yield name, full.detach()

    def _files(self, directory: Path) -> dict[str, Path]:
        tag = f"world_size_{self.world}_rank_{self.rank}.pt"
        return {kind: Path(directory) / f"{kind}_{tag}" for kind in ("model", "optim", "extra_state")}

    def save_checkpoint(self, directory: Path) -> None:
        files = self._files(directory)
        torch.save(self.model.state_dict(), files["model"])
        if self.optimizer is not None:
            torch.save(self.optimizer.state_dict(), files["optim"])
            torch.save({"lr_scheduler": self.scheduler.state_dict()}, files["extra_state"])
        if self.rank == 0:
            hf = Path(directory) / "huggingface"
            self.model.config.save_pretrained(hf)
            load_tokenizer(self.model_cfg).save_pretrained(hf)

    def load_checkpoint(self, directory: Path) -> None:
        import torch.distributed.tensor  # noqa: F401  (DTensor for weights-only loading)

        files = self._files(directory)
        if not files["model"].exists():
            raise FileNotFoundError(f"{files['model']} is missing (was the checkpoint written with another world "
                                    f"size than {self.world}?)")
        self.model.load_state_dict(torch.load(files["model"], map_location=self.device, weights_only=True))
        if self.optimizer is not None and files["optim"].exists():
            self.optimizer.load_state_dict(torch.load(files["optim"], map_location=self.device, weights_only=True))
            extra = torch.load(files["extra_state"], weights_only=True)
            self.scheduler.load_state_dict(extra["lr_scheduler"])

    def save_hf(self, directory: Path) -> None:
        state = dict(self.named_weights())  # every rank gathers; rank 0 writes
        if self.rank != 0:
            return
        Path(directory).mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(directory, state_dict=state)
        load_tokenizer(self.model_cfg).save_pretrained(directory)


def _decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    base = getattr(model, getattr(model, "base_model_prefix", "model"), model)
    layers = getattr(base, "layers", None) or getattr(getattr(base, "model", None), "layers", None)
    return list(layers) if layers is not None else []


def _micro(batch: TokenBatch, size: int) -> list[TokenBatch]:
    size = max(1, size or 1)
    return [batch.select(list(range(i, min(i + size, len(batch))))) for i in range(0, len(batch), size)]
