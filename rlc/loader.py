"""source -> defaults -> overrides -> verl markers -> references -> schema -> model -> checks: one file in, a
typed `RLCConfig` out.

verl's dumped and composed configs carry Hydra/OmegaConf markers that are not settings: `_target_` names the verl
dataclass a section is instantiated as (rlc builds its own models, so a `verl.` class is dropped with one note,
and any other class is an error: rlc cannot instantiate it), and `???` marks a value the user must give (still
unset after overrides, it takes rlc's default with a warning, or is an error where rlc has none).

Each stage returns diagnostics instead of raising; the first stage with errors stops the chain (a tree that fails
the schema would only produce echoes of the same mistakes in the models). Positions are attached at the end, from
the source table, so stages deal in key paths only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlc import markers, schema
from rlc.compose import compose, has_defaults
from rlc.diagnostics import CompileError, Diagnostic, KeyPath, Position, has_errors
from rlc.interpolate import UNSET_ENV, env_references, interpolate
from rlc.source import Source, load_file


@dataclass
class Loaded:
    config: Any  # RLCConfig; typed loosely so importing this module stays cheap
    source: Source
    tree: dict[str, Any]
    warnings: list[Diagnostic] = field(default_factory=list)
    env_references: dict[KeyPath, str] = field(default_factory=dict)  # written back as such, never as values
    unset_env: list[Diagnostic] = field(default_factory=list)  # warnings here; resolution refuses them


def load_config(path: str | Path, sets: Sequence[str] = (), flags: Sequence[tuple[str, str]] = ()) -> Loaded:
    """Load and check one config file with `--set` overrides, then command-line flags given as (how the user
    wrote the flag, its override), applied; raises CompileError listing every problem."""
    source = load_file(path)
    if has_defaults(source):
        source, sets = compose(source, sets)
    labels = [f"--set {text}" for text in sets] + [label for label, _ in flags]
    tree, override_positions = apply_sets(source.data, [*sets, *(text for _, text in flags)], labels)
    positions = {**source.positions, **override_positions}
    tree, found = markers.strip(tree)
    references = env_references(tree)
    tree, problems = interpolate(tree, complete=False)
    found += problems + markers.control_characters(tree)
    located = Source(source.file, tree, positions)
    if has_errors(found):
        raise CompileError(sorted((_locate(d, located) for d in found), key=_order))
    # A value that waits for a variable unset here is checked by everything but its own type, and resolution
    # (launch) refuses until the variable is set.
    unset = [_locate(d, located) for d in found if d.code == UNSET_ENV]
    checked = _without(tree, _untyped(unset)) if unset else tree
    structural = _structural(checked)
    found += structural
    # Unknown keys alone do not change what the rest means: drop them and run the model stage on what is left,
    # so that one run reports typos and cross-field problems together. Any other structural error would put
    # a default in place of the user's value and make the cross-field rules report phantoms, so they wait.
    config = None
    if all(d.code == "unknown-key" for d in structural):
        config, problems = _model_stage(_without(checked, [d.path for d in structural]))
        found += problems
    found = [_naming_references(d, tree, references) for d in found]
    found = sorted((_locate(d, located) for d in found), key=_order)
    if has_errors(found):
        raise CompileError(found)
    if config is None or structural:  # built from a pruned tree: the unknown keys were warnings
        config, _ = _build(checked)
    return Loaded(config, located, tree, found, references, unset)


def _structural(tree: dict[str, Any]) -> list[Diagnostic]:
    """The schema's verdict on `tree`. A tree the models take in strict mode (no coercion, as JSON Schema checks)
    passes the schema generated from them, so jsonschema (a fifth of a cold `rlc validate`) is imported only to
    explain a tree that fails."""
    from pydantic import ValidationError

    from rlc.config import RLCConfig

    try:
        RLCConfig.model_validate(tree, strict=True)
    except ValidationError:
        return schema.check(tree)
    return []


def apply_sets(data: dict[str, Any], sets: Sequence[str], labels: Sequence[str] | None = None
               ) -> tuple[dict[str, Any], dict[Any, Position]]:
    if not sets:
        return data, {}
    from rlc.edits import apply_overrides

    return apply_overrides(data, sets, labels=labels)


def _model_stage(tree: dict[str, Any]) -> tuple[Any, list[Diagnostic]]:
    """The model built from `tree` (None if it fails) and the problems the models and cross-field rules find."""
    config, found = _build(tree)
    if config is None:
        return None, found
    from rlc.config.checks import run_checks

    return config, run_checks(config, tree)


def _untyped(unset: list[Diagnostic]) -> list[KeyPath]:
    """The keys of unset-variable values that their text cannot stand for in the checks: those that are not
    strings (an integer from `${oc.env:NNODES}`) take their default there instead."""
    from rlc.edits import field_types

    root = schema.load()
    kinds = [field_types(root, [str(p) for p in d.path])[0] for d in unset]
    return [d.path for d, types in zip(unset, kinds, strict=True) if types and "string" not in types]


def _without(tree: dict[str, Any], paths: list[tuple]) -> dict[str, Any]:
    """A copy of `tree` minus the keys at `paths` (their defaults take over); `tree` itself if there are none."""
    if not paths:
        return tree
    import copy

    pruned = copy.deepcopy(tree)
    for path in paths:
        node: Any = pruned
        for part in path[:-1]:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and path:
            node.pop(path[-1], None)
    return pruned


def _build(tree: dict[str, Any]) -> tuple[Any, list[Diagnostic]]:
    from pydantic import ValidationError

    from rlc.config import RLCConfig

    try:
        return RLCConfig.model_validate(tree), []
    except ValidationError as err:
        return None, [Diagnostic(e["msg"], tuple(e["loc"])) for e in err.errors()]


def _order(diagnostic: Diagnostic) -> tuple:
    position = diagnostic.position
    return (position.file, position.line, position.col) if position else ("", 0, 0)


def _locate(diagnostic: Diagnostic, source: Source) -> Diagnostic:
    if diagnostic.position is not None:
        return diagnostic
    from dataclasses import replace

    return replace(diagnostic, position=source.position(diagnostic.path) or Position(source.file, 1, 1))


def _naming_references(diagnostic: Diagnostic, tree: dict[str, Any], references: dict[KeyPath, str]) -> Diagnostic:
    """A message about a value read from the environment shows the reference, never the value: it may be a secret
    (`expected an integer, got "${oc.env:HF_TOKEN}"`)."""
    from dataclasses import replace

    node: Any = tree
    for part in diagnostic.path:
        node = node[part] if isinstance(node, dict | list) and _holds(node, part) else None
    reference = references.get(diagnostic.path)
    if reference is None or not isinstance(node, str) or not node:
        return diagnostic
    return replace(diagnostic, message=diagnostic.message.replace(node, reference))


def _holds(node: dict | list, part: Any) -> bool:
    return part in node if isinstance(node, dict) else isinstance(part, int) and 0 <= part < len(node)
