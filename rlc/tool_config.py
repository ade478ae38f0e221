"""Tool and interaction declarations for multi-turn rollout, in verl's YAML format, checked before a run starts.

A tool file (`rollout.multi_turn.tool_config_path`)::

    tools:
      - class_name: rlc_runtime.tools.code.CodeTool      # module.Class implementing the tool
        config: {timeout_s: 10}                          # passed to the class
        tool_schema:                                     # OpenAI function schema, shown to the model
          type: function
          function:
            name: run_python
            description: Run a Python program and return what it prints.
            parameters: {type: object, properties: {code: {type: string}}, required: [code]}

An interaction file (`interaction_config_path`): `interaction: [{name, class_name, config}]`.

verl's own tools and interactions (`verl.tools.gsm8k_tool.Gsm8kTool`, ...) need verl installed, which an rlc run
does not: rlc substitutes its own implementation of the same tool (`VERL_CLASSES`; each module's docstring says
where it differs) and says so in a note at the file's line.

The compiler reads both here (no runtime import: the class's module is located, never executed), and the runtime
reads them through the same functions, so a file that validates is the file that runs. Every problem is a
`Diagnostic` at the file's own line.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlc.diagnostics import CompileError, Diagnostic, KeyPath, Severity
from rlc.source import Source, load_file

TOOL_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")  # OpenAI's rule for function names
CLASS_PATH = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+")
# verl's class path -> rlc's implementation of the same tool or interaction.
VERL_CLASSES = {
    "verl.tools.gsm8k_tool.Gsm8kTool": "rlc_runtime.tools.answer.Gsm8kTool",
    "verl.tools.geo3k_tool.Geo3kTool": "rlc_runtime.tools.answer.Geo3kTool",
    "verl.tools.search_tool.SearchTool": "rlc_runtime.tools.search.SearchTool",
    "verl.interactions.gsm8k_interaction.Gsm8kInteraction": "rlc_runtime.tools.interaction.Gsm8kInteraction",
}
JSON_TYPES = {"string", "number", "integer", "boolean", "array", "object", "null"}


@dataclass(frozen=True)
class ToolSpec:
    name: str
    class_name: str
    config: dict[str, Any]
    schema: dict[str, Any]  # {"type": "function", "function": {...}}, as the chat template receives it


@dataclass(frozen=True)
class InteractionSpec:
    name: str
    class_name: str
    config: dict[str, Any] = field(default_factory=dict)


def read_tools(path: str, notes: list[Diagnostic] | None = None) -> list[ToolSpec]:
    """The tools of `path`; raises CompileError with every problem found. A verl class that rlc substitutes is
    replaced in the spec, with a note added to `notes`."""
    source = _load(path)
    specs, names, problems = [], set(), []
    for where, item in _entries(source, "tools", "a tool file needs a non-empty `tools:` list",
                                "each tool is a mapping with class_name and tool_schema", problems, notes):
        schema_problems = _schema_problems(source, (*where, "tool_schema"), item.get("tool_schema"))
        problems += schema_problems
        if schema_problems:
            continue
        if _class(item) == VERL_CLASSES["verl.tools.search_tool.SearchTool"] and \
                not re.match(r"^https?://", str((item.get("config") or {}).get("retrieval_service_url", ""))):
            problems.append(_at(source, (*where, "config"), "the search tool needs config.retrieval_service_url, "
                                "the http(s) URL of its retrieval service", hint="e.g. http://127.0.0.1:8000/retrieve"))
        name = item["tool_schema"]["function"]["name"]
        if name in names:
            problems.append(_at(source, (*where, "tool_schema", "function", "name"), f"tool {name!r} is declared "
                                                                                      f"twice"))
        names.add(name)
        specs.append(ToolSpec(name, _class(item), item.get("config") or {}, item["tool_schema"]))
    if problems:
        raise CompileError(problems)
    return specs


def read_interactions(path: str, notes: list[Diagnostic] | None = None) -> list[InteractionSpec]:
    source = _load(path)
    specs, problems = [], []
    for where, item in _entries(source, "interaction", "an interaction file needs a non-empty `interaction:` list",
                                "each interaction is a mapping with name and class_name", problems, notes):
        name = item.get("name", item.get("class_name"))  # verl names an unnamed interaction by its class
        if not isinstance(name, str):
            problems.append(_at(source, (*where, "name"), "name must be a string"))
            continue
        specs.append(InteractionSpec(name, _class(item), item.get("config") or {}))
    if problems:
        raise CompileError(problems)
    return specs


def _load(path: str) -> Source:
    if not Path(path).is_file():
        raise CompileError([Diagnostic(f"{path}: no such file")])
    source = load_file(path, allow_empty=True)
    if not isinstance(source.data, dict):
        raise CompileError([_at(source, (), "the file must be a YAML mapping")])
    return source


def _class(item: dict[str, Any]) -> str:
    """The class that runs: rlc's own in place of a verl class it substitutes."""
    name = item.get("class_name", "")
    return VERL_CLASSES.get(name, name)


def _entries(source: Source, key: str, empty: str, not_mapping: str, problems: list[Diagnostic],
             notes: list[Diagnostic] | None) -> Iterator[tuple[KeyPath, dict[str, Any]]]:
    """The mappings of the file's `key:` list with where each is; the problems that tools and interactions alike
    can have (not a mapping, class, config) go to `problems` as each entry is reached, in file order, and the
    notes on substituted verl classes to `notes`."""
    items = source.data.get(key)
    if not isinstance(items, list) or not items:
        raise CompileError([_at(source, (key,), empty)])
    for index, item in enumerate(items):
        where: KeyPath = (key, index)
        if not isinstance(item, dict):
            problems.append(_at(source, where, not_mapping))
            continue
        class_name = item.get("class_name")
        if class_name in VERL_CLASSES:
            if notes is not None:
                notes.append(_at(source, (*where, "class_name"), f"{class_name} is verl's; rlc runs its own "
                                 f"implementation of the same tool, {VERL_CLASSES[class_name]}", severity="note",
                                 hint=f"its differences from verl's are in the docstring of "
                                      f"{VERL_CLASSES[class_name].rsplit('.', 1)[0]}"))
        else:
            problems += _class_problems(source, where, class_name)
        problems += _config_problems(source, where, item.get("config", {}))
        yield where, item


def _at(source: Source, path: KeyPath, message: str, hint: str | None = None,
        severity: Severity = "error") -> Diagnostic:
    position = source.position(path)
    where = ".".join(str(p) for p in path) or "top level"
    return Diagnostic(f"{'' if position else source.file + ': '}{where}: {message}", position=position, hint=hint,
                      severity=severity)


def _class_problems(source: Source, where: KeyPath, class_name: Any) -> list[Diagnostic]:
    if not isinstance(class_name, str) or not CLASS_PATH.fullmatch(class_name):
        return [_at(source, (*where, "class_name"), f"class_name {class_name!r} is not a `module.Class` path")]
    module = class_name.rsplit(".", 1)[0]
    if not module_exists(module):
        return [_at(source, (*where, "class_name"), f"module {module!r} of {class_name} cannot be found",
                    hint="the module must be importable by the run (installed, or on PYTHONPATH)")]
    return []


def module_exists(module: str) -> bool:
    """Whether `module` can be imported, found without running any of its packages' code."""
    top, *rest = module.split(".")
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return False
    if spec is None:
        return False
    locations = list(spec.submodule_search_locations or [])
    for index, part in enumerate(rest):
        last = index == len(rest) - 1
        found = [Path(d) / part for d in locations]
        package = next((p for p in found if (p / "__init__.py").is_file() or (not last and p.is_dir())), None)
        if last and (package is not None or any(p.with_suffix(".py").is_file() for p in found)):
            return True
        if package is None:
            return False
        locations = [str(package)]
    return not rest


def _config_problems(source: Source, where: KeyPath, config: Any) -> list[Diagnostic]:
    if config is None or isinstance(config, dict):
        return []
    return [_at(source, (*where, "config"), "config must be a mapping")]


def _schema_problems(source: Source, where: KeyPath, schema: Any) -> list[Diagnostic]:
    """OpenAI's function schema: {type: function, function: {name, description, parameters}}."""
    if not isinstance(schema, dict):
        return [_at(source, where, "tool_schema is missing or not a mapping")]
    if schema.get("type") != "function":
        return [_at(source, (*where, "type"), f"tool_schema.type must be 'function', not {schema.get('type')!r}")]
    function = schema.get("function")
    if not isinstance(function, dict):
        return [_at(source, (*where, "function"), "tool_schema.function is missing or not a mapping")]
    fwhere = (*where, "function")
    problems = []
    name = function.get("name")
    if not isinstance(name, str) or not TOOL_NAME.fullmatch(name):
        problems.append(_at(source, (*fwhere, "name"), f"function name {name!r} must be 1-64 letters, digits, '_' "
                                                       f"or '-'"))
    if not isinstance(function.get("description", ""), str):
        problems.append(_at(source, (*fwhere, "description"), "description must be a string"))
    params = function.get("parameters", {"type": "object", "properties": {}})
    pwhere = (*fwhere, "parameters")
    if not isinstance(params, dict) or params.get("type") != "object":
        return [*problems, _at(source, pwhere, "parameters must be a mapping with type: object")]
    properties = params.get("properties", {})
    if not isinstance(properties, dict):
        return [*problems, _at(source, (*pwhere, "properties"), "properties must be a mapping")]
    for key, prop in properties.items():
        kind = prop.get("type") if isinstance(prop, dict) else None
        kinds = kind if isinstance(kind, list) else [kind]
        if not all(k in JSON_TYPES for k in kinds):
            problems.append(_at(source, (*pwhere, "properties", key), f"parameter {key!r} needs a JSON type "
                                                                      f"({', '.join(sorted(JSON_TYPES))})"))
    required = params.get("required", [])
    if not isinstance(required, list) or any(r not in properties for r in required):
        problems.append(_at(source, (*pwhere, "required"), "required must list names among the properties"))
    return problems
