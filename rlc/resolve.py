"""model -> resolved: every default explicit, every Hub reference pinned to a commit, and where each value came from.

What ran must be written down exactly: the resolved config is the only thing the runtime reads. Hub lookups happen
here, before any GPU is touched, so a misspelt revision fails in a second instead of after the cluster starts.
Where the Hub cannot answer at all (offline without a cache, no network, a failing Hub), a reference stays as
written and is listed in `Resolved.unpinned`, so that plans can be made on a laptop or a login node; `rlc launch`
refuses to start such a run unless told `--no-pin` (rlc.preflight).

One exception to "every value explicit": a value that reads the environment (`${oc.env:HF_TOKEN}`) is checked
with this machine's environment but written back as the reference, so no secret reaches a file, a terminal or an
upload; the runtime resolves it from its own environment. A value the compiler then rewrote (a revision pinned to
a sha, a relative path made absolute) is written as rewritten: that is what must run.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from rlc.diagnostics import CompileError, Diagnostic, KeyPath, Position, dotted
from rlc.interpolate import interpolate
from rlc.loader import Loaded

ARF_MODEL = ("actor_rollout_ref", "model")
FULL_SHA = re.compile(r"[0-9a-f]{40}")
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
    unpinned: dict[str, str] = field(default_factory=dict)  # dotted key -> why it could not be pinned

    def header(self, first_line: str) -> str:
        """The comment block atop a written config: where it came from, and what is not pinned."""
        lines = [first_line]
        if self.unpinned:
            lines += ["NOT PINNED (the Hub could not be asked; `rlc launch` refuses these without --no-pin):"]
            lines += [f"  {key}: {why}" for key, why in self.unpinned.items()]
        return "\n".join(lines)

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
    notes, pinned, unpinned = _pin_all(config, offline, loaded)
    provenance = _provenance(loaded, config.model_dump(mode="json"), pinned)
    for key, why in unpinned.items():
        provenance[key] = f"NOT PINNED ({why.split(': ', 1)[0]}: the Hub could not be asked)"
    return Resolved(config, provenance, notes, references, unpinned)


def written_tree(config: Any, references: dict[KeyPath, EnvReference]) -> dict[str, Any]:
    tree = config.model_dump(mode="json")
    for path, reference in references.items():
        if _has(tree, path) and _get(tree, path) == reference.value:  # not rewritten since: still the reference
            parent = _get(tree, path[:-1])
            parent[path[-1]] = reference.text
    return tree


def _pin_all(config: Any, offline: bool, loaded: Loaded
             ) -> tuple[list[Diagnostic], dict[KeyPath, str], dict[str, str]]:
    """Pin every Hub reference. One the Hub cannot answer for (offline and not cached, no network, a failing
    Hub) stays as written and is returned in `unpinned` (dotted key -> why), so that a plan can still be made
    where the Hub is out of reach; a launch refuses it unless told otherwise (`rlc.preflight`)."""
    from rlc import hub

    notes: list[Diagnostic] = []
    errors: list[Diagnostic] = []
    pinned: dict[KeyPath, str] = {}
    unpinned: dict[str, str] = {}
    if hub.offline_requested(offline):
        notes.append(Diagnostic("offline: Hub references resolve from the local Hugging Face cache",
                                severity="note"))
    unreachable: hub.HubError | None = None  # after the first, the Hub is not asked again: each try may be slow

    def attempt(repo_id: str, revision: str | None, repo_type: str, key: KeyPath, where: KeyPath,
                revision_at: KeyPath) -> str | None:
        nonlocal unreachable
        try:
            if unreachable is not None:
                raise unreachable
            ref = hub.pin(repo_id, revision, repo_type=repo_type, offline=offline)
            pinned[key] = f"pinned from {revision or 'the default branch'} ({ref.source})"
            return ref.sha
        except hub.HubError as err:
            if not err.unreachable:
                errors.append(_at(Diagnostic(str(err), revision_at if err.about_revision else where,
                                             hint=err.hint), loaded))
                return None
            why = str(err) if unreachable is None else "not asked: the Hub could not be reached for an earlier one"
            unreachable = err
            if revision and FULL_SHA.fullmatch(revision):  # a full commit sha pins itself
                pinned[key] = "a commit sha as written (the Hub was not reached)"
                return revision
            unpinned[dotted(key)] = f"{repo_type} {repo_id} at {revision or 'the default branch'}: {why}"
            notes.append(_at(Diagnostic(f"not pinned: {unpinned[dotted(key)]}", key, severity="warning",
                                        hint=f"{err.hint}; `rlc launch` refuses an unpinned reference unless "
                                             "given --no-pin"), loaded))
            return None

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
        key = (*path, revision_key)
        sha = attempt(block.path, requested, "model", key, (*path, "path"), key)
        if sha is None:
            continue
        setattr(block, revision_key, sha)
        if revision_key == "revision":
            block.revision_requested = requested or "main"
    for dataset_id in dataset_ids(config.data):
        key = ("data", "revisions", dataset_id)
        sha = attempt(dataset_id, config.data.revision, "dataset", key, ("data", "train_files"), ("data", "revision"))
        if sha is None:
            continue
        config.data.revisions[dataset_id] = sha
    if errors:
        raise CompileError(errors)
    return notes, pinned, unpinned


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


def dataset_ids(data: Any) -> list[str]:
    from rlc import hub

    files = [*as_list(data.train_files), *as_list(data.val_files)]
    return [f for f in dict.fromkeys(files) if not hub.is_local_path(f) and _looks_like_hub_id(f)]


def _looks_like_hub_id(name: str) -> bool:
    """`org/name` without a data-file extension: a dataset on the Hub rather than a file that is not here yet."""
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not name.endswith(DATA_EXTENSIONS)


def as_list(value: str | list[str] | None) -> list[str]:
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
