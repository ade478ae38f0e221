"""Shared pieces of the config models.

Every section forbids unknown keys (a typo is an error, never a silent default). Keys that verl accepts but rlc's
runtime does not implement are declared with `unimplemented(...)`: they validate, so existing verl configs keep
working, and setting them to anything but the default earns a warning that says so.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

UNIMPLEMENTED = "x-rlc-unimplemented"
"""JSON Schema key marking a field rlc accepts for verl compatibility but does not act on."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=False, protected_namespaces=())


def unimplemented(default: Any, why: str = "rlc's runtime ignores it", *, error: bool = False, **kwargs: Any) -> Any:
    """A verl key rlc accepts but does not act on. `error=True` for switches whose silent no-op would mislead."""
    return Field(default, json_schema_extra={UNIMPLEMENTED: {"why": why, "error": error}}, **kwargs)


Interp = str
"""An OmegaConf-style `${a.b}` reference; resolved by `rlc resolve`."""
