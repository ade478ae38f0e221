"""Shared pieces of the config models, and the status of every key as data on the key.

Every section forbids unknown keys (a typo is an error, never a silent default) and carries verl's keys under
verl's names, so a verl config validates. Each key is exactly one of:

- implemented (no marker): the runtime reads it, or the compiler turns it into what the runtime reads;
- `instead(default, what)`: accepted; a value other than the default (or than the key it mirrors, `same_as`) earns
  a warning saying what rlc does instead, unless the switch it depends on (`only_with`) is off, as verl ignores it
  then too;
- `refused(default, why)`: known from verl, not implemented; a value other than the default is an error saying why;
- `partly(default, implemented, why)`: a name from verl's list (loss modes, estimators, engines); the schema
  accepts all of verl's names, and one that rlc does not run yet is an error naming those it does, unless
  `substitutes` gives what rlc runs in its place (`sglang` -> `vllm`): then a warning says so, and resolution
  writes the substitute (`substituted`), so the resolved config says what runs.

The marker lives in the field's JSON Schema (`x-rlc`), so validation (`checks.check_status`), the key table
(`rlc keys`) and the tests read the same data; no key's status is an `if` somewhere else. Descriptions are the
fields' docstrings; `rlc schema` reads them from the source into the JSON Schema (pydantic's
`use_attribute_docstrings` would parse every model's source on each start of `rlc validate`, which needs none of
them), and `rlc show --explain` shows them from there. For the same reason the model modules do without
`from __future__ import annotations`: pydantic would compile each of their ~1000 annotation strings at every start.
"""

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from rlc.schema import STATUS


class Section(BaseModel):
    # defer_build: a section's validator is built when it is first used, not at import; the root's validator holds
    # every section's, so the ~60 sections' own validators (built at each start otherwise) are mostly never made
    model_config = ConfigDict(extra="forbid", validate_default=False, protected_namespaces=(), defer_build=True)


class NullableSection(Section):
    """A section verl 0.9.1 dumps with every key null (its deprecated `reward_model`, `custom_reward_function`,
    `sandbox_fusion`): null means "not set", so each such key takes its default."""

    @model_validator(mode="before")
    @classmethod
    def _null_is_unset(cls, data: Any) -> Any:
        return {k: v for k, v in data.items() if v is not None} if isinstance(data, dict) else data


def instead(default: Any, what: str, *, same_as: str | None = None, only_with: str | None = None,
            also_fine: tuple[Any, ...] = (), own: tuple[str, ...] = (), **kwargs: Any) -> Any:
    """A verl key rlc accepts and does not act on as verl does; `what` says what rlc does instead.

    `same_as`: the key whose value this one mirrors in verl (`ref.megatron` follows `actor.megatron`): a value
    equal to that key's is what rlc does anyway, so it earns no warning. `only_with`: the switch without which verl
    ignores this key too (`lora_alpha` without `lora_rank`): while it is off, rlc and verl agree, so no warning.
    Both are dotted keys from the root, or from this key's section when they start with a dot; `only_with` may
    also compare, as `.strategy==fsdp_turbo` or `.trainer_mode!=sync`. `also_fine`: as for `refused`. `own`: keys of
    a section that mirrors another (`same_as`) which it reads for itself (`ref.megatron.param_offload`): they are
    left out of the comparison.
    """
    marker = {"status": "warn", "note": what} | ({"also_fine": list(also_fine)} if also_fine else {})
    marker |= ({"same_as": same_as} if same_as else {}) | ({"only_with": only_with} if only_with else {})
    marker |= {"own": list(own)} if own else {}
    return Field(default, json_schema_extra={STATUS: marker}, **kwargs)


def refused(default: Any, why: str, *, also_fine: tuple[Any, ...] = (), **kwargs: Any) -> Any:
    """A verl key rlc knows but does not implement: any value but the default is an error giving `why`.
    `also_fine`: other values that ask for what rlc does anyway (a size of 1 where the default is None)."""
    marker = {"status": "refused", "note": why} | ({"also_fine": list(also_fine)} if also_fine else {})
    return Field(default, json_schema_extra={STATUS: marker}, **kwargs)


def partly(default: Any, implemented: tuple[str, ...], why: str = "not implemented in rlc yet", *,
           substitutes: dict[str, tuple[str, str]] | None = None, **kwargs: Any) -> Any:
    """A choice among verl's names of which rlc runs only `implemented`; `substitutes`: name -> (the implemented
    name rlc runs in its place, what the user must know about the difference)."""
    marker = {"status": "partial", "implemented": list(implemented), "note": why}
    if substitutes:
        marker["substitutes"] = {name: {"runs": runs, "note": note} for name, (runs, note) in substitutes.items()}
    return Field(default, json_schema_extra={STATUS: marker}, **kwargs)


def substituted(section: BaseModel, name: str) -> Any:
    """The value of `section.name` that rlc runs: its substitute (see `partly`) or itself."""
    value = getattr(section, name)
    marker = status_of(type(section).model_fields[name]) or {}
    return marker.get("substitutes", {}).get(value, {}).get("runs", value)


def status_of(field: Any) -> dict[str, Any] | None:
    """The `x-rlc` marker of a pydantic FieldInfo, or None for an implemented key."""
    extra = field.json_schema_extra
    return extra.get(STATUS) if isinstance(extra, dict) else None


PROFILING = "profiling is not implemented in rlc; rlc logs step timings (timing_s/*) instead"
