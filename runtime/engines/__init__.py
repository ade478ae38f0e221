"""Training engines behind one contract (`base.TrainEngine`), and the one place that picks the backend."""

from __future__ import annotations

from typing import Any


def make_engine(cfg: Any, role: str, device: str) -> Any:
    """The `backend`'s engine for `role` (actor, ref or critic) of the resolved config; imported lazily, as
    megatron-core is installed only where it trains."""
    if cfg.backend == "megatron":
        from rlc_runtime.engines.megatron import MegatronEngine as Engine
    else:
        from rlc_runtime.engines.fsdp import FSDPEngine as Engine
    return Engine(cfg, role, device)


def make_reference(cfg: Any, actor: Any, device: str) -> Any:
    """The reference policy's engine. With LoRA it is the actor's frozen base (its adapters switched off, verl's
    `ref_in_actor`), so no second model is loaded; otherwise a `ref` engine of its own."""
    from rlc_runtime.engines.lora import AdapterlessReference, lora_enabled

    if lora_enabled(cfg.actor_rollout_ref.model):
        return AdapterlessReference(actor)
    return make_engine(cfg, "ref", device)
