"""model -> resolved: every default explicit, every Hub reference pinned to a commit, and where each value came from.

What ran must be written down exactly: the resolved config is the only thing the runtime reads. Hub lookups happen
here, before any GPU is touched, so a misspelt revision fails in a second instead of after the cluster starts.

One exception to "every value explicit": a value that reads the environment (`${oc.env:HF_TOKEN}`) is checked
with this machine's environment but written back as the reference, so no secret reaches a file, a terminal or an
upload; the runtime resolves it from its own environment. A value the compiler then rewrote (a revision pinned to
a sha, a relative path made absolute) is written as rewritten: that is what must run.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from rlc.diagnostics import CompileError, Diagnostic, KeyPath, Position, dotted
from rlc.interpolate import interpolate
from rlc.loader import Loaded

ARF_MODEL = ("actor_rollout_ref", "model")
DATA_EXTENSIONS = (".parquet", ".json", ".jsonl", ".csv", ".arrow", ".txt")


@dataclass(frozen=True)
class EnvReference:
    text: str  # as the user wrote it: `${oc.env:HF_TOKEN}`
    value: Any  # what it resolved to here


@dataclass
class Resolved:
    config: Any  # RLCConfig
    provenance: dict[str, str]
    notes: list[Diagnostic] = field(default_factory=list)
    references: dict[KeyPath, EnvReference] = field(default_factory=dict)

    def tree(self) -> dict[str, Any]:
        """The config as rlc writes and prints it: environment references kept (see the module docstring)."""
        return written_tree(self.config, self.references)


def resolve(loaded: Loaded, offline: bool = False) -> Resolved:
    from rlc.config import RLCConfig
    from rlc.config.defaults import fill_defaults

    if loaded.unset_env:
        raise CompileError([replace(d, severity="error", hint="set it in the environment that runs `rlc`, or "
                                    "give a default: ${oc.env:VAR,default}") for d in loaded.unset_env])
    offline = offline or os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0", "false", "False")
    filled = fill_defaults(loaded.config).model_dump(mode="json")
    tree, problems = interpolate(filled)
    if problems:
        raise CompileError([_at(p, loaded) for p in problems])
    config = RLCConfig.model_validate(tree)
    checked = config.model_dump(mode="json")
    references = {path: EnvReference(text, _get(checked, path)) for path, text in loaded.env_references.items()
                  if _has(checked, path)}
    notes, pinned = _pin_all(config, offline, loaded)
    provenance = _provenance(loaded, config.model_dump(mode="json"), pinned)
    return Resolved(config, provenance, notes, references)


def written_tree(config: Any, references: dict[KeyPath, EnvReference]) -> dict[str, Any]:
    tree = config.model_dump(mode="json")
    for path, reference in references.items():
        if _has(tree, path) and _get(tree, path) == reference.value:  # not rewritten since: still the reference
            parent = _get(tree, path[:-1])
            parent[path[-1]] = reference.text
    return tree


def _pin_all(config: Any, offline: bool, loaded: Loaded) -> tuple[list[Diagnostic], dict[KeyPath, str]]:
    from rlc import hub

    notes: list[Diagnostic] = []
    errors: list[Diagnostic] = []
    pinned: dict[KeyPath, str] = {}
    if hub.offline_requested(offline):
        notes.append(Diagnostic("offline: Hub references resolve from the local Hugging Face cache",
                                severity="note"))
    for path, block, revision_key in _model_refs(config):
        if block.path is None:
            continue
        if hub.is_local_path(block.path):
            if getattr(block, revision_key):
                notes.append(_at(Diagnostic(f"revision ignored: {block.path} is a local directory",
                                            (*path, revision_key), severity="warning"), loaded))
                setattr(block, revision_key, None)
            continue
        requested = getattr(block, revision_key)
        try:
            ref = hub.pin(block.path, requested, repo_type="model", offline=offline)
        except hub.HubError as err:
            key = revision_key if err.about_revision else "path"
            errors.append(_at(Diagnostic(str(err), (*path, key), hint=err.hint), loaded))
            continue
        setattr(block, revision_key, ref.sha)
        if revision_key == "revision":
            block.revision_requested = requested or "main"
        pinned[(*path, revision_key)] = f"pinned from {requested or 'the default branch'} ({ref.source})"
    for dataset_id in _dataset_ids(config.data):
        try:
            ref = hub.pin(dataset_id, config.data.revision, repo_type="dataset", offline=offline)
        except hub.HubError as err:
            key = "revision" if err.about_revision else "train_files"
            errors.append(_at(Diagnostic(str(err), ("data", key), hint=err.hint), loaded))
            continue
        config.data.revisions[dataset_id] = ref.sha
        pinned[("data", "revisions", dataset_id)] = f"pinned from {config.data.revision or 'the default branch'}"
    if errors:
        raise CompileError(errors)
    return notes, pinned


def _model_refs(config: Any) -> Iterator[tuple[KeyPath, Any, str]]:
    """Every place a model, tokenizer or critic is loaded from, with the key that holds its revision."""
    model = config.actor_rollout_ref.model
    yield ARF_MODEL, model, "revision"
    if model.tokenizer_path and model.tokenizer_path != model.path:
        yield ARF_MODEL, _Alias(model, "tokenizer_path"), "tokenizer_revision"
    critic = config.critic
    if critic.enable and critic.model.path:
        yield ("critic", "model"), critic.model, "revision"


class _Alias:
    """Present `model.tokenizer_path` as `.path` so tokenizers pin through the same loop as models."""

    def __init__(self, model: Any, attribute: str) -> None:
        object.__setattr__(self, "_model", model)
        object.__setattr__(self, "_attribute", attribute)

    @property
    def path(self) -> str:
        return getattr(self._model, self._attribute)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name != "revision_requested":
            setattr(self._model, name, value)


def _dataset_ids(data: Any) -> list[str]:
    from rlc import hub

    files = [*_as_list(data.train_files), *_as_list(data.val_files)]
    return [f for f in dict.fromkeys(files) if not hub.is_local_path(f) and _looks_like_hub_id(f)]


def _looks_like_hub_id(name: str) -> bool:
    """`org/name` without a data-file extension: a dataset on the Hub rather than a file that is not here yet."""
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not name.endswith(DATA_EXTENSIONS)


def _as_list(value: str | list[str] | None) -> list[str]:
    return [] if value is None else [value] if isinstance(value, str) else list(value)


def _provenance(loaded: Loaded, final: dict[str, Any], pinned: dict[KeyPath, str]) -> dict[str, str]:
    from rlc.config import RLCConfig

    plain_defaults = RLCConfig.model_validate(_required_only(loaded.tree)).model_dump(mode="json")
    out: dict[str, str] = {}
    for path, value in _leaves(final):
        position = loaded.source.positions.get(path)
        if path in pinned:
            out[dotted(path)] = pinned[path]
        elif position is not None and _has(loaded.tree, path):
            out[dotted(path)] = f"{position.file}:{position.line}:{position.col}"
        elif _get(plain_defaults, path) != value:
            out[dotted(path)] = "derived from other keys"
        else:
            out[dotted(path)] = "default"
    return out


def _required_only(tree: dict[str, Any]) -> dict[str, Any]:
    """The smallest tree that validates: the required keys of the user's config, nothing else."""
    return {"data": {"train_files": tree["data"]["train_files"]},
            "actor_rollout_ref": {"model": {"path": tree["actor_rollout_ref"]["model"]["path"]}}}


def _leaves(node: Any, path: KeyPath = ()) -> Iterator[tuple[KeyPath, Any]]:
    if isinstance(node, dict) and node:
        for key, value in node.items():
            yield from _leaves(value, (*path, key))
    else:
        yield path, node


def _has(tree: dict[str, Any], path: KeyPath) -> bool:
    node: Any = tree
    for part in path:
        in_dict = isinstance(node, dict) and part in node
        if in_dict or (isinstance(node, list) and isinstance(part, int) and part < len(node)):
            node = node[part]
        else:
            return False
    return True


def _get(tree: dict[str, Any], path: KeyPath) -> Any:
    node: Any = tree
    for part in path:
        if isinstance(node, dict):
            node = node.get(part)
        else:
            node = node[part] if isinstance(node, list) and isinstance(part, int) and part < len(node) else None
    return node


def _at(diagnostic: Diagnostic, loaded: Loaded) -> Diagnostic:

    position = loaded.source.position(diagnostic.path) or Position(loaded.source.file, 1, 1)
    return replace(diagnostic, position=position)


def dump_yaml(tree: dict[str, Any], header: str = "") -> str:
    """The resolved config (`Resolved.tree()`) as YAML: block style, keys in model order."""
    import io

    from ruamel.yaml import YAML

    yaml = YAML()
    yaml.default_flow_style = False
    yaml.width = 120
    buffer = io.StringIO()
    if header:
        buffer.write("".join(f"# {line}\n" if line else "#\n" for line in header.splitlines()))
    yaml.dump(tree, buffer)
    return buffer.getvalue()
