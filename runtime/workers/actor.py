"""One training rank: the policy, and where used the reference and the critic, plus the colocated rollout engine.

All roles of a rank live in one process, as in verl's colocated worker: they share the rank's device and its
torch.distributed group, weights move from policy to rollout by reference (no copy through Ray), and one placement
serves them all. Each role is an engine behind `rlc_runtime.engines.base.TrainEngine` (FSDP2 or Megatron, chosen
by `engines.make_engine`) or `RolloutEngine`; the trained roles' updates are the shared `engines.update`. This
class only routes the controller's calls to them and never asks which backend it holds.

The reference is a second engine loaded from the actor's model and never updated (verl's `ref` worker), built only
when a KL term needs it; with LoRA it is the actor's own base with the adapters off (`engines.make_reference`).
The critic is built only for GAE (or `critic.enable`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from rlc_runtime.batch import TokenBatch
from rlc_runtime.engines.update import (
    Update,
    compute_log_probs,
    compute_outputs,
    compute_values,
    critic_update,
    policy_update,
)
from rlc_runtime.rollout.base import Generation
from rlc_runtime.weight_transfer import BroadcastChannel, Bucket, IpcChannel, WeightSpec, specs_of
from rlc_runtime.workers.group import RankWorker
from rlc_runtime.workers.rollout import GenerationRequest, make_rollout, timed_generate


class TrainWorker(RankWorker):
    def __init__(self, rank: int, world_size: int, device: str, config: dict[str, Any]) -> None:
        super().__init__(rank, world_size, device)
        from transformers.utils import logging as hf_logging

        from rlc.config.root import RLCConfig

        hf_logging.disable_progress_bar()  # one "Loading weights" bar per model per rank is noise in the run log
        self.cfg = RLCConfig.model_validate(config)
        self.actor: Any = None
        self.ref: Any = None
        self.critic: Any = None
        self.updates: dict[str, Update] = {}
        self.rollout: Any = None

    def build(self) -> None:
        """Load every role's model (after `init_distributed`: FSDP needs the process group)."""
        from rlc.config.checks import uses_critic, uses_reference
        from rlc_runtime.engines import make_engine, make_reference
        from rlc_runtime.models import load_tokenizer

        cfg = self.cfg
        torch.manual_seed(cfg.trainer.seed + self.rank)
        self.actor = make_engine(cfg, "actor", self.device)
        self.updates["actor"] = policy_update(self.actor, cfg)
        self.ref = make_reference(cfg, self.actor, self.device) if uses_reference(cfg) else None
        if uses_critic(cfg):
            self.critic = make_engine(cfg, "critic", self.device)
            self.updates["critic"] = critic_update(self.critic, cfg)
        if self.cfg.actor_rollout_ref.hybrid_engine:
            self.rollout = make_rollout(self.cfg, self.device, load_tokenizer(self.cfg.actor_rollout_ref.model))

    # rollout ---------------------------------------------------------------------------------------------------
    def generate(self, request: GenerationRequest) -> tuple[list[Generation], float]:
        """The samples, and the seconds the engine took (`timing_s/gen_engine`)."""
        return timed_generate(self.rollout, request)

    def sync_weights(self) -> None:
        """The policy's current weights into the rollout engine (a collective: every rank gathers); a sleeping engine
        wakes as it loads them."""
        self.rollout.load_weights(self.actor.named_weights())

    def release_rollout(self, drop_weights: bool = False) -> None:
        """`drop_weights`: a sync of the full weights comes before the next generation (see VLLMRollout.sleep)."""
        self.rollout.sleep(drop_weights)

    def weight_layout(self) -> list[WeightSpec]:
        """Name, shape and dtype of each weight the rollout ranks of their own will receive (a collective)."""
        return specs_of(self.actor.named_weights())

    def join_weight_channel(self, address: tuple[str, int], size: int, timeout_s: int, buckets: list[Bucket],
                            ipc: bool = False) -> list[Any] | None:
        """Rank 0 becomes rank 0 of the weight channel to the rollout ranks; the other ranks only help gather.
        With `ipc` (one GPU shared with the rollout) rank 0 returns its buffers' IPC handles instead."""
        self.weight_buckets = buckets
        if self.rank != 0:
            return None
        if ipc:
            self.channel: Any = IpcChannel(self.device, buckets)
            return self.channel.export()
        self.channel = BroadcastChannel(*address, 0, size, self.device, timeout_s)
        return None

    def send_weights(self) -> None:
        """The policy's weights to the rollout ranks, bucket by bucket. A collective: every rank gathers."""
        weights = self.actor.named_weights()
        if self.rank == 0:
            self.channel.send(weights, self.weight_buckets)
            return
        for _ in weights:
            pass

    # training --------------------------------------------------------------------------------------------------
    def log_probs(self, batch: TokenBatch) -> dict[str, torch.Tensor]:
        """The old policy's log-probs, and sum_v pi_v^2 when actor.calculate_sum_pi_squared asks for it."""
        size, _, budget = self._log_prob_batching("rollout")
        names = ("log_probs", "sum_pi_squared") if self.cfg.actor_rollout_ref.actor.calculate_sum_pi_squared \
            else ("log_probs",)
        return compute_outputs(self.actor, batch, size, names, budget)

    def ref_log_probs(self, batch: TokenBatch) -> torch.Tensor:
        return compute_log_probs(self.ref, batch, *self._log_prob_batching("ref"))[0]

    def values(self, batch: TokenBatch) -> torch.Tensor:
        critic = self.cfg.critic
        budget = critic.forward_max_token_len_per_gpu if critic.use_dynamic_bsz else None
        return compute_values(self.critic, batch, critic.forward_micro_batch_size_per_gpu, budget)

    def update_actor(self, batch: TokenBatch) -> dict[str, float]:
        return self.updates["actor"](batch)

    def update_critic(self, batch: TokenBatch) -> dict[str, float]:
        return self.updates["critic"](batch)

    # checkpoints -----------------------------------------------------------------------------------------------
    def save(self, directory: str, hf_model: bool = False) -> None:
        root = Path(directory)
        for name, update in self.updates.items():
            (root / name).mkdir(parents=True, exist_ok=True)
            update.engine.save_checkpoint(root / name, update.state_dict())
        if hf_model:
            self.actor.save_hf(root / "actor" / "huggingface")
        rng = {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state() if self.device == "cuda" else None}
        torch.save(rng, root / "actor" / f"rng_rank_{self.rank}.pt")

    def load(self, directory: str) -> None:
        root = Path(directory)
        for name, update in self.updates.items():
            update.load_state_dict(update.engine.load_checkpoint(root / name))
        rng_file = root / "actor" / f"rng_rank_{self.rank}.pt"
        if rng_file.exists():  # absent when the checkpoint was written by a run of another world size
            rng = torch.load(rng_file, weights_only=False)
            torch.set_rng_state(rng["torch"])
            if rng["cuda"] is not None and self.device == "cuda":
                torch.cuda.set_rng_state(rng["cuda"])

    def _log_prob_batching(self, section: str) -> tuple[int, bool, int | None]:
        """(rows per micro-batch, with entropy, token budget when dynamic) of a log-prob pass."""
        block = getattr(self.cfg.actor_rollout_ref, section)
        budget = block.log_prob_max_token_len_per_gpu if block.log_prob_use_dynamic_bsz else None
        return block.log_prob_micro_batch_size_per_gpu, False, budget

