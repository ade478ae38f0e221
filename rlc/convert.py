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
    from ruamel.yaml import YAML

    from rlc.source import load_file

    source = load_file(base_file)  # the usual checks and messages for a bad file
    merged = from_overrides(texts, base=source.data, expand_env=expand_env, allow_unknown=allow_unknown)
    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
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
