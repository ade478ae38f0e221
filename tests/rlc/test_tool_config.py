"""Tool and interaction files are checked before a run starts, each problem at its line of the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from rlc.diagnostics import CompileError
from rlc.tool_config import read_interactions, read_tools

ROOT = Path(__file__).resolve().parents[2]


def test_the_bundled_tool_files_read() -> None:
    [add] = read_tools(str(ROOT / "examples/tools/calculator.yaml"))
    assert (add.name, add.class_name, add.config) == ("add", "rlc_runtime.tools.calculator.AddTool",
                                                      {"call_timeout_s": 5})
    assert add.schema["function"]["parameters"]["required"] == ["a", "b"]
    [code] = read_tools(str(ROOT / "examples/tools/code.yaml"))
    assert code.name == "run_python"


def test_every_problem_is_reported_at_its_line(tmp_path: Path) -> None:
    bad = tmp_path / "tools.yaml"
    bad.write_text(
        "tools:\n"
        "  - class_name: rlc_runtime.tools.nosuch.Tool\n"  # line 2
        "    tool_schema:\n"
        "      type: function\n"
        "      function:\n"
        "        name: bad name\n"  # line 6
        "        parameters:\n"
        "          type: object\n"
        "          properties:\n"
        "            a: {type: int}\n"  # line 10
        "          required: [b]\n"  # line 11
        "  - class_name: NoModule\n"  # line 12
        "    tool_schema: {type: function, function: {name: add}}\n")
    with pytest.raises(CompileError) as caught:
        read_tools(str(bad))
    found = sorted((d.position.line, d.message.split(": ", 1)[1]) for d in caught.value.diagnostics)
    expected = [(2, "module 'rlc_runtime.tools.nosuch' of"), (6, "function name 'bad name' must be"),
                (10, "parameter 'a' needs a JSON type"), (11, "required must list names among"),
                (12, "class_name 'NoModule' is not a `module.Class` path")]
    assert len(found) == len(expected)
    assert all(line == want_line and text.startswith(want) for (line, text), (want_line, want) in
               zip(found, expected, strict=True)), found
    assert all(d.position.file == str(bad) for d in caught.value.diagnostics)


def test_duplicate_names_and_missing_files(tmp_path: Path) -> None:
    twice = tmp_path / "twice.yaml"
    one = ("  - class_name: rlc_runtime.tools.calculator.AddTool\n"
           "    tool_schema: {type: function, function: {name: add}}\n")
    twice.write_text("tools:\n" + one + one)
    with pytest.raises(CompileError, match="tool 'add' is declared twice"):
        read_tools(str(twice))
    with pytest.raises(CompileError, match="no such file"):
        read_tools(str(tmp_path / "absent.yaml"))
    empty = tmp_path / "empty.yaml"
    empty.write_text("tools: []\n")
    with pytest.raises(CompileError, match="non-empty `tools:` list"):
        read_tools(str(empty))


def test_interactions(tmp_path: Path) -> None:
    good = tmp_path / "interaction.yaml"
    good.write_text("interaction:\n  - name: tutor\n    class_name: rlc_runtime.tools.calculator.AddTool\n"
                    "    config: {hint: true}\n")
    assert [(i.name, i.config) for i in read_interactions(str(good))] == [("tutor", {"hint": True})]
    good.write_text("interaction:\n  - name: tutor\n    class_name: nowhere.Tutor\n")
    with pytest.raises(CompileError, match="module 'nowhere' of nowhere.Tutor cannot be found"):
        read_interactions(str(good))
