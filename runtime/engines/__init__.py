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
