"""What a config tree holds besides settings: Hydra/OmegaConf markers, and characters no setting may contain.

verl's dumped configs put `_target_: verl.<...>Config` in most sections: it names the dataclass verl instantiates
the section as. rlc validates the section against its own models instead, so a `verl.` target is dropped (one
note for all of them) and any other target is an error: rlc cannot instantiate a user's class, and ignoring it
would silently change what the section means. `???` is OmegaConf's "mandatory, not given yet": still there after
overrides, it takes rlc's default with a warning, or is an error where rlc has no default. verl 0.9's composed
configs also carry the config-group choice `model_engine` (dp, megatron, ...) at the top: it is rlc's `backend`;
older verl configs say megatron only through `actor.strategy`, which then sets `backend` when the file does not.

Control characters (NUL, escape, ...) have no use in a setting and break the shell scripts, SLURM headers and
model cards that values flow into, so they are refused in every string, keys included; tab and newline stay
legal (prompts and templates use them).
"""

from __future__ import annotations

import re
from typing import Any

from rlc.diagnostics import Diagnostic, KeyPath, dotted
from rlc.interpolate import MISSING

TARGET = "_target_"
ENGINES = {"dp": "fsdp", "megatron": "megatron"}  # verl's `model_engine` choice -> rlc's `backend`
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def strip(tree: dict[str, Any]) -> tuple[dict[str, Any], list[Diagnostic]]:
    """`tree` without `_target_` keys and unset `???` values, and what was done about them."""
    found: list[Diagnostic] = []
    targets: list[KeyPath] = []
    out = _strip(tree, (), found, targets)
    if "model_engine" in out:
        found += _engine(out)
    found += _backend_from_strategy(out)
    if targets:
        found.append(Diagnostic(f"this and {len(targets) - 1} more `_target_` key(s) name verl's config classes; "
                                "rlc checks these sections against its own schema and ignores them", targets[0],
                                severity="note", code="verl-target"))
    return out, found


def _strip(node: Any, path: KeyPath, found: list[Diagnostic], targets: list[KeyPath]) -> Any:
    if isinstance(node, list):
        return [_strip(item, (*path, index), found, targets) for index, item in enumerate(node)]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        child = (*path, key)
        if key == TARGET and isinstance(value, str) and value.startswith("verl."):
            targets.append(child)
        elif key == TARGET:
            found.append(Diagnostic(f"`_target_: {value}` asks to instantiate a class; rlc builds its own config "
                                    "and cannot instantiate classes", child, hint="remove the key"))
        elif value == MISSING:
            keep, diagnostic = _unset(child)
            found += [diagnostic] if diagnostic else []
            if keep:
                out[key] = value
        else:
            out[key] = _strip(value, child, found, targets)
    return out


def _engine(tree: dict[str, Any]) -> list[Diagnostic]:
    """verl's `model_engine` group choice becomes `backend` (in place)."""
    engine = tree.pop("model_engine")
    backend = ENGINES.get(engine) if isinstance(engine, str) else None
    if backend is None:
        return [Diagnostic(f"model_engine {engine!r} is not one rlc runs", ("model_engine",),
                           hint="rlc's engines: model_engine dp (backend fsdp) or megatron", code="model-engine")]
    if tree.setdefault("backend", backend) != backend:
        return [Diagnostic(f"model_engine {engine!r} means backend {backend!r}, but backend is "
                           f"{tree['backend']!r}", ("model_engine",), code="model-engine")]
    return []


def _backend_from_strategy(tree: dict[str, Any]) -> list[Diagnostic]:
    actor = tree.get("actor_rollout_ref", {}).get("actor", {}) if isinstance(tree.get("actor_rollout_ref"), dict) \
        else {}
    if "backend" in tree or not isinstance(actor, dict) or actor.get("strategy") != "megatron":
        return []
    tree["backend"] = "megatron"
    return [Diagnostic("backend megatron, as verl's actor strategy says (rlc's `backend` is not set)",
                       ("actor_rollout_ref", "actor", "strategy"), severity="note", code="backend-from-strategy")]


def _unset(path: KeyPath) -> tuple[bool, Diagnostic | None]:
    """What to do with `???` at `path`: (keep it, what to say). Unknown keys stay for the schema to report."""
    from rlc.edits import schema_default

    known, has_default, default = schema_default(path)
    if not known:
        return True, None
    if has_default:
        return False, Diagnostic(f"`???` (a value verl requires you to set) is still unset; rlc uses its default "
                                 f"{default!r}", path, hint=f"set it, e.g. --set {dotted(path)}=...",
                                 severity="warning", code="missing-value")
    return False, Diagnostic("`???`: this value is required and still unset", path,
                             hint=f"set it in the file or with --set {dotted(path)}=...", code="missing-value")


def control_characters(tree: Any, path: KeyPath = ()) -> list[Diagnostic]:
    """An error for each key or string value that contains a control character other than tab and newline."""
    found = []
    if isinstance(tree, dict):
        for key, value in tree.items():
            if isinstance(key, str) and _CONTROL.search(key):
                found.append(_control((*path, key), key, "key"))
            found += control_characters(value, (*path, key))
    elif isinstance(tree, list):
        for index, item in enumerate(tree):
            found += control_characters(item, (*path, index))
    elif isinstance(tree, str) and _CONTROL.search(tree):
        found.append(_control(path, tree, "value"))
    return found


def _control(path: KeyPath, text: str, what: str) -> Diagnostic:
    char = _CONTROL.search(text).group(0)
    return Diagnostic(f"the {what} contains the control character {char!r} (at offset {text.index(char)}); "
                      "settings cannot hold control characters", path, code="control-character")
