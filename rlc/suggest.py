"""Did-you-mean for unknown keys, searched over the whole schema rather than the key's siblings alone.

A key in the wrong place is the commonest mistake in a merged verl config (II-VERL accepted
`actor_rollout_ref.ref.param_offload`, which verl reads as `actor_rollout_ref.ref.fsdp_config.param_offload`).
So the same name anywhere in the tree comes first, nearest the key's own section first (the longest shared
prefix); then a close spelling among the siblings; then a close spelling anywhere. Suggestions are full dotted
paths. `relocation` is the one unambiguous move that `rlc convert --fix` may make on its own.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from functools import cache
from typing import Any

from rlc.diagnostics import KeyPath

MAX_SHOWN = 3


@cache
def known_paths() -> tuple[tuple[str, ...], ...]:
    """Every key path the schema declares (sections and values)."""
    from rlc import schema
    from rlc.edits import schema_options

    root = schema.load()
    found: set[tuple[str, ...]] = set()

    def walk(node: dict[str, Any], path: tuple[str, ...]) -> None:
        for option in schema_options(node, root):
            for key, child in option.get("properties", {}).items():
                if (*path, key) not in found and len(path) < 16:
                    found.add((*path, key))
                    walk(child, (*path, key))

    walk(root, ())
    return tuple(sorted(found))


def same_name(path: KeyPath) -> list[tuple[str, ...]]:
    """Declared paths ending in `path`'s last key, the ones sharing the longest prefix with `path` only."""
    if any(not isinstance(part, str) for part in path):
        return []
    key, parent = path[-1], tuple(path[:-1])
    matches = [p for p in known_paths() if p[-1] == key and p != tuple(path)]
    if not matches:
        return []
    best = max(_shared(p, parent) for p in matches)
    nearest = [p for p in matches if _shared(p, parent) == best]
    return sorted(nearest, key=lambda p: (len(p), p))


def relocation(path: KeyPath, backend: str = "fsdp") -> tuple[str, ...] | None:
    """Where a misplaced key belongs, when exactly one place is nearest for the config's `backend` (an fsdp
    config's `param_offload` goes to `fsdp_config`, not to the `megatron` block beside it); else None."""
    other = {"fsdp": {"megatron"}, "megatron": {"fsdp", "fsdp_config"}}.get(backend, set())
    nearest = [p for p in same_name(path) if not other & set(p)]
    return nearest[0] if len(nearest) == 1 else None


def did_you_mean(path: KeyPath, siblings: Sequence[str]) -> str | None:
    """A hint naming the nearest known keys for the unknown key at `path`, or None."""
    elsewhere = same_name(path)
    if elsewhere:
        return _hint(elsewhere, "this key lives under another section")
    key = str(path[-1])
    close = difflib.get_close_matches(key, list(siblings), n=1, cutoff=0.6)
    if close:
        return f"did you mean `{close[0]}`?"
    names = sorted({p[-1] for p in known_paths()})
    spelled = difflib.get_close_matches(key, names, n=1, cutoff=0.9)
    if spelled:
        return _hint(same_name((*path[:-1], spelled[0])), "a close spelling exists elsewhere")
    return None


def _hint(paths: list[tuple[str, ...]], why: str) -> str:
    shown = ", ".join(f"`{'.'.join(p)}`" for p in paths[:MAX_SHOWN])
    more = f" (and {len(paths) - MAX_SHOWN} more)" if len(paths) > MAX_SHOWN else ""
    return f"did you mean {shown}{more}? ({why})"


def _shared(a: Sequence[Any], b: Sequence[Any]) -> int:
    count = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        count += 1
    return count
