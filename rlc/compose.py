"""Hydra defaults lists: a config whose `defaults:` names other files is composed from them, as Hydra would.

verl's own configs (`ppo_trainer.yaml`, `actor/dp_actor.yaml`, ...) are built this way, so rlc composes them
rather than asking users to flatten them by hand. What verl's files use is supported, with Hydra 1.3's rules:
group entries `group@package: option` (paths relative to the including file's group, `../group`, or absolute
`/group`), config entries `name@package`, `_self_` (last when not listed), `null` options, `optional`, options
that name another group's choice (`${model_engine}_actor`), `override group: option` in the first file or as an
override (`--set model_engine=megatron`), and the `# @package _global_` header.
Each file is merged at its package, in list order; as in OmegaConf, mappings merge key by key and anything else
is replaced. Files are found under the directory of the first file, then `hydra.searchpath` (`file://`,
`pkg://`). The rest of Hydra's defaults grammar (other package headers, `_global_` in entries) is a clear error,
not a guess.
Every key keeps the file:line:col where it was written, so diagnostics point into the right file.
"""

from __future__ import annotations

import copy
import posixpath
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlc.diagnostics import CompileError, Diagnostic, KeyPath, Position
from rlc.source import Source, load_file

MAX_FILES = 256  # files in one composition; verl's ppo_trainer.yaml uses 20


@dataclass(frozen=True)
class _Entry:
    path: str  # a config: its path under the root, without `.yaml`; a group entry: the group's path
    option: str | None  # a group entry's option (may hold `${group}` choices); None for a config entry
    package: tuple[str, ...]  # relative to the including file's package
    optional: bool
    position: Position | None
    override: bool = False


_SELF = _Entry("_self_", None, (), False, None)
_CHOICE = re.compile(r"\$\{([^{}]+)\}")
_GROUP_CHOICE = re.compile(r"[A-Za-z_][\w/]*=[\w.\-]+")  # `group=option`: no dots in the key, one word after


def has_defaults(source: Source) -> bool:
    return "defaults" in source.data


def compose(source: Source, sets: Sequence[str] = ()) -> tuple[Source, list[str]]:
    """`source` with its defaults list (and theirs) merged in; the `defaults` keys and Hydra's own `hydra` section
    are gone. Overrides among `sets` that choose a config group's option (`model_engine=megatron`, as on verl's
    command line) take part in the composition; the other overrides are returned, to be applied to the result."""
    roots = [Path(source.file).resolve().parent, *_search_path(source)]
    out = Source(source.file, {}, {})
    composer = _Composer(roots, out)
    rest = []
    for text in sets:
        group, equals, option = text.partition("=")
        if equals and _GROUP_CHOICE.fullmatch(text) and any((r / group / f"{option}.yaml").is_file() for r in roots):
            composer.overrides[group] = _Entry(group, option, (), False, Position(f"--set {text}", 0, 0), True)
        else:
            rest.append(text)
    composer.include(source, "", (), [])
    for group, entry in composer.overrides.items():
        if group not in composer.choices:
            raise _error(f"`override {group}` matches no group in the defaults lists", entry.position)
    out.data.pop("hydra", None)  # Hydra's settings for itself, not part of the job's config
    return out, rest


def _search_path(source: Source) -> list[Path]:
    """`hydra.searchpath`: more directories to find configs in, after the first file's (as Hydra searches)."""
    hydra = source.data.get("hydra")
    entries = hydra.get("searchpath", []) if isinstance(hydra, dict) else []
    return [_search_dir(entry, source.position(("hydra", "searchpath", index)))
            for index, entry in enumerate(entries if isinstance(entries, list) else [entries])]


def _search_dir(entry: Any, position: Position | None) -> Path:
    scheme, _, rest = str(entry).partition("://")
    if scheme == "file" and Path(rest).is_dir():
        return Path(rest).resolve()  # relative to the current directory, as Hydra reads it
    if scheme == "pkg":
        from importlib.util import find_spec

        top, *inner = rest.split(".")
        spec = find_spec(top)  # finds the package without importing it (verl's import pulls in torch)
        if spec is not None and spec.submodule_search_locations:
            folder = Path(next(iter(spec.submodule_search_locations)), *inner)
            if folder.is_dir():
                return folder
    raise _error(f"cannot find `{entry}` (file:// paths are relative to the current directory; "
                 "pkg:// needs the package installed)", position, path=("hydra", "searchpath"))


class _Composer:
    def __init__(self, roots: list[Path], out: Source) -> None:
        self.roots, self.out, self.files = roots, out, 0
        self.overrides: dict[str, _Entry] = {}  # `override group: option` entries of the first file
        self.choices: dict[str, str] = {}  # each group's chosen option, for `${group}` in later options

    def include(self, source: Source, group: str, package: KeyPath, stack: list[str]) -> None:
        entries = _entries(source, group)
        for entry in entries:
            if entry.override and stack:
                raise _error("`override` is supported in the first config only", entry.position)
            if entry.override:
                self.overrides[entry.path] = entry
        entries = [entry for entry in entries if not entry.override]
        if not any(entry is _SELF for entry in entries):
            entries.append(_SELF)
        for entry in entries:
            if entry is _SELF:
                own = {k: v for k, v in source.data.items() if k != "defaults"}
                where = {p: pos for p, pos in source.positions.items() if p[:1] != ("defaults",)}
                _merge(self.out, package, own, where)
                continue
            self.include_entry(entry, package, stack)

    def include_entry(self, entry: _Entry, package: KeyPath, stack: list[str]) -> None:
        name = entry.path if entry.option is None else f"{entry.path}/{self.option(entry)}"
        if name in stack:
            raise _error(f"defaults cycle: {' -> '.join([*stack, name])}", entry.position)
        file = next((root / f"{name}.yaml" for root in self.roots if (root / f"{name}.yaml").is_file()), None)
        if file is None:
            if entry.optional:
                return
            raise _error(f"no config `{name}.yaml` under {', '.join(str(r) for r in self.roots)}", entry.position,
                         hint="configs are found under the first file's directory and `hydra.searchpath`")
        self.files += 1
        if self.files > MAX_FILES:
            raise _error(f"the defaults lists include more than {MAX_FILES} files", entry.position)
        child = load_file(file, allow_empty=True)
        header = _package_header(file, entry.position)
        target = header if header is not None else (*package, *entry.package)
        if entry.position is not None and target not in self.out.positions:
            self.out.positions[target] = entry.position
        self.include(child, posixpath.dirname(name), target, [*stack, name])

    def option(self, entry: _Entry) -> str:
        """The entry's option after `override`s, with `${group}` replaced by that group's choice."""
        chosen = self.overrides[entry.path].option if entry.path in self.overrides else entry.option

        def choice(match: re.Match) -> str:
            if match.group(1).strip() not in self.choices:
                raise _error(f"`{match.group(0)}` names no group chosen earlier in the defaults lists",
                             entry.position)
            return self.choices[match.group(1).strip()]

        option = _CHOICE.sub(choice, chosen)
        self.choices.setdefault(entry.path, option)
        return option


def _package_header(file: Path, position: Position | None) -> tuple[str, ...] | None:
    """`# @package _global_` at the top of a file puts its keys at the root; None when there is no header."""
    for line in file.read_text().splitlines():
        if not line.startswith("#"):
            return None
        words = line[1:].split()
        if words[:1] == ["@package"]:
            if words[1:] != ["_global_"]:
                raise _error(f"{file.name}: the header `{line}` is not supported (only `# @package _global_`)",
                             position)
            return ()
    return None


def _entries(source: Source, group: str) -> list[_Entry]:
    listed = source.data.get("defaults", [])
    if not isinstance(listed, list):
        raise _error("`defaults` is a list of configs to compose (Hydra's defaults list)",
                     source.position(("defaults",)))
    entries = [_entry(item, group, source.position(("defaults", index))) for index, item in enumerate(listed)]
    return [entry for entry in entries if entry is not None]  # a `null` option includes nothing


def _entry(item: Any, group: str, position: Position | None) -> _Entry | None:
    if item == "_self_":
        return _SELF
    if isinstance(item, str):
        name, _, package = item.partition("@")
        path = _group_path(name.strip(), group, position)
        implied = posixpath.dirname(name.strip().lstrip("/"))
        return _Entry(path, None, _package(package or implied.replace("/", "."), position), False, position)
    if not (isinstance(item, dict) and len(item) == 1):
        raise _error(f"cannot read the entry {item!r}; write `group@package: option` or `name`", position)
    (key, option), = item.items()
    words = key.split()
    keyword = words[0] if len(words) == 2 and words[0] in ("optional", "override") else None
    if len(words) != 1 + (keyword is not None):
        raise _error(f"cannot read the entry key `{key}`", position)
    name, _, package = words[-1].partition("@")
    if option is None:
        return None
    if not isinstance(option, str):
        raise _error(f"the option of `{key}` is one config name, not {option!r}", position)
    if ".." in name and not package:
        raise _error(f"`{key}` climbs groups; give its package as `{key}@<package>`", position)
    return _Entry(_group_path(name, group, position), option,
                  _package(package or name.lstrip("/").replace("/", "."), position), keyword == "optional",
                  position, keyword == "override")


def _group_path(name: str, group: str, position: Position | None) -> str:
    joined = posixpath.normpath(name.lstrip("/") if name.startswith("/") else posixpath.join(group, name))
    if joined.startswith(".."):
        raise _error(f"`{name}` points outside the config directory", position)
    return joined


def _package(text: str, position: Position | None) -> tuple[str, ...]:
    if "_global_" in text or "_group_" in text or "_name_" in text:
        raise _error(f"the package `{text}` is not supported; name the section, e.g. `@trainer`", position)
    return tuple(part for part in text.split(".") if part)


def _merge(out: Source, package: KeyPath, data: dict[str, Any], positions: dict[KeyPath, Position]) -> None:
    node = out.data
    for part in package:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    _merge_into(node, data)
    for path, position in positions.items():
        out.positions[(*package, *path)] = position


def _merge_into(node: dict[str, Any], data: dict[str, Any]) -> None:
    for key, value in data.items():
        if isinstance(value, dict) and isinstance(node.get(key), dict):
            _merge_into(node[key], value)
        else:
            node[key] = copy.deepcopy(value)


def _error(message: str, position: Position | None, hint: str | None = None,
           path: KeyPath = ("defaults",)) -> CompileError:
    return CompileError([Diagnostic(message, path, position, hint=hint)])
