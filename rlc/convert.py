"""`rlc convert`: legacy verl command lines -> YAML (also merged into an existing file), and YAML -> command line.

The override grammar is `rlc.overrides`, the typing is the schema's (`rlc.edits`), so a converted config means
exactly what the command line meant to verl. Keys verl renamed across versions are moved to today's name with a
note. YAML -> CLI -> YAML is the identity (a property test holds it to that).
"""

from __future__ import annotations

import io
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlc.diagnostics import CompileError, Diagnostic, Position
from rlc.overrides import OverrideError, format_value, parse_override

RENAMED = {
    "trainer.val_generations_to_log_to_wandb": "trainer.log_val_generations",
    "actor_rollout_ref.actor.optim.warmup_style": "actor_rollout_ref.actor.optim.lr_scheduler_type",
    "critic.optim.warmup_style": "critic.optim.lr_scheduler_type",
    "reward.custom_reward_function.path": "custom_reward_function.path",
    "reward.custom_reward_function.name": "custom_reward_function.name",
    "critic.model.fsdp_config": "critic.fsdp",
    "actor_rollout_ref.rollout.micro_batch_size": "actor_rollout_ref.rollout.log_prob_micro_batch_size",
}


@dataclass
class Converted:
    """What a legacy command line amounts to in rlc."""

    texts: list[str]  # overrides, checked
    notes: list[str]
    base: dict[str, Any] | None = None  # the keys of the user's own `--config-name` YAML, under the overrides
    launch: str | None = None  # II-VERL's `verl train-ppo CONFIG`: the equivalent `rlc launch` command line


def read_command(text: str, script: str | None = None) -> Converted:
    """A command line or script -> its overrides, notes, and what its Hydra options name."""
    from rlc.cmdline import CmdlineError, split_command_line

    try:
        command = split_command_line(text, script=script)
    except CmdlineError as err:
        raise CompileError([Diagnostic(str(err))]) from None
    texts, notes = renamed(command.overrides)
    check_texts(texts)
    out = Converted(texts, command.notes + notes)
    if command.env:  # names only: a value may be a secret (WANDB_API_KEY=...)
        out.notes.append(f"the script sets the environment variables {', '.join(sorted(command.env))} for verl; a "
                         "config does not hold the environment: set them where you run `rlc launch`")
    if command.config_file is not None:  # II-VERL's config is already YAML: nothing to convert
        words = ["rlc", "launch", command.config_file] + (["--backend", command.backend] if command.backend else [])
        words += [w for t in texts for w in ("--set", t)]
        out.launch = " ".join(shlex.quote(w) for w in words) + "\n"
        return out
    backend = command.backend
    if command.config_name is not None:
        out.base, backend = hydra_config(command.config_path, command.config_name, out.notes)
    if backend:
        out.texts = [f"backend={backend}", *texts]
    return out


def hydra_config(folder: str | None, name: str, notes: list[str]) -> tuple[dict[str, Any], str | None]:
    """The user's `--config-path`/`--config-name` YAML: its keys, and the backend its `defaults:` list names."""
    from rlc.cmdline import TRAINER_CONFIGS
    from rlc.source import load_file

    where = Path(folder or ".", name + ".yaml")
    if not folder or not where.is_absolute() or not where.is_file():
        raise CompileError([Diagnostic(
            f"`--config-name={name}` composes the run from a config of your own, and rlc cannot find it "
            f"({where}{'' if where.is_absolute() else ': --config-path must be absolute here'}); convert from "
            "where it exists, or merge its keys with `rlc convert --into`")])
    data = dict(load_file(where).data)
    defaults = data.pop("defaults", []) or []
    data.pop("hydra", None)
    bases = [d for d in defaults if d != "_self_"]
    unknown = [d for d in bases if not (isinstance(d, str) and d.removesuffix(".yaml") in TRAINER_CONFIGS)]
    if unknown:
        raise CompileError([Diagnostic(f"{where}: its `defaults:` entries {unknown} are not verl's trainer configs "
                                       f"({', '.join(TRAINER_CONFIGS)}); rlc cannot compose them")])
    backend = next((TRAINER_CONFIGS[d.removesuffix(".yaml")] for d in bases), None)
    notes.append(f"read `--config-name={name}` from {where}: its keys are the base of the converted config")
    return data, backend


def renamed(texts: list[str]) -> tuple[list[str], list[str]]:
    """Overrides with verl's old key names moved to the current ones, and a note for each move."""
    out, notes = [], []
    for text in texts:
        prefix = text[: len(text) - len(text.lstrip("+~"))]
        key, sep, value = text[len(prefix):].partition("=")
        for old, new in RENAMED.items():
            if key == old or key.startswith(old + "."):
                notes.append(f"`{old}` is now `{new}` in verl; converted")
                key = new + key[len(old):]
        out.append(f"{prefix}{key}{sep}{value}")
    return out, notes


def from_overrides(texts: list[str], *, base: dict[str, Any] | None = None, expand_env: bool = False,
                   allow_unknown: bool = False) -> dict[str, Any]:
    from rlc import schema
    from rlc.edits import apply_overrides

    tree, _ = apply_overrides(base or {}, texts, expand_env=expand_env, where="override")
    if not allow_unknown:
        unknown = [d for d in schema.check(tree) if d.code == "unknown-key"]
        if unknown:
            raise CompileError([_at_override(d, texts) for d in unknown])
    return tree


def _at_override(diagnostic: Diagnostic, texts: list[str]) -> Diagnostic:
    from dataclasses import replace

    key = diagnostic.dotted
    text = next((t for t in texts if t.lstrip("+~").split("=", 1)[0].startswith(key)), key)
    return replace(diagnostic, position=Position(f"override {text}", 0, 0),
                   hint=(diagnostic.hint or "") + " (or pass --allow-unknown)")


def merge_into(base_file: Path, texts: list[str], *, expand_env: bool = False, allow_unknown: bool = False) -> str:
    """Apply the overrides to `base_file`, keeping its comments, key order and layout (ruamel round trip)."""

    from rlc.source import load_file

    source = load_file(base_file)  # the usual checks and messages for a bad file
    merged = from_overrides(texts, base=source.data, expand_env=expand_env, allow_unknown=allow_unknown)
    yaml = _round_trip()
    document = yaml.load(base_file.read_text())
    _update(document, merged)
    buffer = io.StringIO()
    yaml.dump(document, buffer)
    return buffer.getvalue()


def _update(node: Any, wanted: dict[str, Any]) -> None:
    """Make the round-trip mapping `node` equal `wanted`, touching only what differs."""
    for key in [k for k in node if k not in wanted]:
        del node[key]
    for key, value in wanted.items():
        if isinstance(value, dict) and isinstance(node.get(key), dict):
            _update(node[key], value)
        elif key not in node or node[key] != value:
            node[key] = value


def to_yaml(tree: dict[str, Any]) -> str:
    from ruamel.yaml import YAML

    yaml = YAML()
    yaml.default_flow_style = False
    buffer = io.StringIO()
    yaml.dump(tree, buffer)
    return buffer.getvalue()


def to_cli(tree: dict[str, Any], program: str = "python3 -m verl.trainer.main_ppo") -> str:
    lines = [shlex.quote(f"{key}={format_value(value)}") for key, value in leaves(tree)]
    return " \\\n    ".join([program, *lines]) + "\n"


def leaves(node: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in node.items():
        path = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict) and value:
            yield from leaves(value, path)
        else:
            yield path, value


def check_texts(texts: list[str]) -> None:
    """Parse every override once up front so that a bad one is reported by itself, with its column."""
    problems = []
    for text in texts:
        try:
            parse_override(text)
        except OverrideError as err:
            problems.append(Diagnostic(str(err)))
    if problems:
        raise CompileError(problems)


def fix_misplaced(path: Path) -> tuple[str, list[str], list[str]]:
    """The file's text with each key in the wrong place moved to where verl reads it (comments, order and layout
    kept), a line per move, and a line per misplaced key left alone. Only unambiguous moves are made
    (`suggest.relocation`)."""
    from rlc import schema
    from rlc.source import load_file
    from rlc.suggest import relocation, same_name

    source = load_file(path)  # the usual checks and messages for a bad file
    tree = source.data
    backend = tree.get("backend") if tree.get("backend") in ("fsdp", "megatron") else "fsdp"
    yaml = _round_trip()
    document = yaml.load(path.read_text())
    moved: list[str] = []
    said: list[str] = []
    for diagnostic in schema.check(tree):
        where = source.position(diagnostic.path)
        line = f"{path}:{where.line}: " if where else ""
        if diagnostic.code != "unknown-key":
            continue
        target = relocation(diagnostic.path, backend)
        if target is None:
            places = ", ".join(f"`{'.'.join(p)}`" for p in same_name(diagnostic.path))
            said += [f"{line}left `{diagnostic.dotted}`: it fits several places ({places})"] if places else []
            continue
        if _present(tree, target):
            said.append(f"{line}not moved `{diagnostic.dotted}`: `{'.'.join(target)}` is already set")
            continue
        if not _written_here(document, diagnostic.path):
            said.append(f"{line}not moved `{diagnostic.dotted}`: it comes from a merge key (`<<:`); move it in the "
                        "anchored mapping")
            continue
        _move(document, diagnostic.path, target)
        moved.append(f"{line}moved `{diagnostic.dotted}` -> `{'.'.join(target)}`")
    buffer = io.StringIO()
    yaml.dump(document, buffer)
    return buffer.getvalue(), moved, said


def _round_trip() -> Any:
    """ruamel's round trip, writing null as `null` (its default, an empty value, surprises verl users)."""
    from ruamel.yaml import YAML

    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    yaml.representer.add_representer(type(None), lambda r, _: r.represent_scalar("tag:yaml.org,2002:null", "null"))
    return yaml


def _present(tree: dict[str, Any], path: tuple[str, ...]) -> bool:
    node: Any = tree
    for part in path:
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def _move(document: Any, source: tuple, target: tuple[str, ...]) -> None:
    """Move the key at `source` to `target` in a round-trip document; its end-of-line comment moves with it, the
    comment lines that followed it stay where they were, and sections left empty are removed."""
    from ruamel.yaml.comments import CommentedMap

    parent = _at(document, source[:-1])
    key = source[-1]
    keys = list(parent)
    eol, rest = _detach_comment(parent, key)
    value = parent.pop(key)
    node = document
    for part in target[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = CommentedMap()
        node = node[part]
    node[target[-1]] = value
    # the lines after the key introduce what follows it: they go after whatever now ends just before that
    index = keys.index(key)
    holder = _last_leaf(parent) if parent and index == len(keys) - 1 else \
        _last_leaf(parent, keys[index - 1]) if index > 0 else None
    if holder is None:
        eol, rest = (eol or "") + rest, ""
    if eol:
        _add_comment(node, target[-1], eol)
    if rest:
        _add_comment(*holder, rest)
    for depth in range(len(source) - 1, 0, -1):
        outer = _at(document, source[:depth - 1])
        if _at(document, source[:depth]):
            break
        _detach_comment(outer, source[depth - 1])
        outer.pop(source[depth - 1])


def _written_here(document: Any, path: tuple) -> bool:
    """Whether the key at `path` is written in its own mapping (not merged in from an anchor with `<<:`)."""
    parent = _at(document, path[:-1])
    own = getattr(getattr(parent, "lc", None), "data", None) or {}
    merged = [m[1] if isinstance(m, tuple) else m for m in getattr(parent, "merge", None) or ()]
    return path[-1] in own or not any(path[-1] in m for m in merged)


def _at(document: Any, path: tuple) -> Any:
    for part in path:
        document = document[part]
    return document


def _detach_comment(parent: Any, key: Any) -> tuple[str | None, str]:
    """Remove `key`'s comment from `parent`: its end-of-line part (None if none) and the lines that follow."""
    entry = parent.ca.items.pop(key, None)
    token = entry[2] if entry and len(entry) > 2 else None
    if token is None:
        return None, ""
    eol, _, rest = token.value.partition("\n")
    return (eol if eol.strip() else None), rest


def _add_comment(mapping: Any, key: Any, text: str) -> None:
    """Append comment text after `mapping[key]`: an end-of-line comment, or lines after it (`text` then starts
    a new line)."""
    from ruamel.yaml.error import CommentMark
    from ruamel.yaml.tokens import CommentToken

    slot = mapping.ca.items.setdefault(key, [None, None, None, None])
    if text.lstrip().startswith("#") and slot[2] is None:
        slot[2] = CommentToken(text.lstrip() + "\n", CommentMark(0), None)
        return
    before, column = (slot[2].value, slot[2].column) if slot[2] is not None else ("\n", 0)
    slot[2] = CommentToken(before + text, CommentMark(column), None)


def _last_leaf(parent: Any, key: Any = None) -> tuple[Any, Any]:
    """The mapping and key that end the text of `parent[key]` (or of all `parent`): where a following comment
    is stored."""
    if key is None:
        key = list(parent)[-1]
    value = parent[key]
    while isinstance(value, dict) and value:
        parent, key = value, list(value)[-1]
        value = parent[key]
    return parent, key
