"""Typed config models, one file per top-level concern; `RLCConfig` is the root."""

from rlc.config.root import ActorRolloutRef, RLCConfig

__all__ = ["ActorRolloutRef", "RLCConfig"]
