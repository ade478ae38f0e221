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


def test_verl_classes_run_as_rlcs_own_with_a_note(tmp_path: Path) -> None:
    tools = tmp_path / "gsm8k_tool_config.yaml"  # verl's examples/sglang_multiturn/config/tool_config/, abridged
    tools.write_text(
        "tools:\n"
        '  - class_name: "verl.tools.gsm8k_tool.Gsm8kTool"\n'  # line 2
        "    config: {type: native}\n"
        "    tool_schema:\n"
        "      type: function\n"
        "      function: {name: calc_gsm8k_reward, parameters: {type: object, properties: {answer: {type: string}}}}\n"
        "  - class_name: verl.tools.other_tool.OtherTool\n"  # line 7: not one rlc substitutes
        "    tool_schema: {type: function, function: {name: other}}\n")
    notes: list = []
    with pytest.raises(CompileError) as caught:
        read_tools(str(tools), notes)
    [note] = notes
    assert (note.severity, note.position.line) == ("note", 2)
    assert "rlc runs its own implementation of the same tool, rlc_runtime.tools.answer.Gsm8kTool" in note.message
    [error] = caught.value.diagnostics
    assert error.position.line == 7 and "cannot be found" in error.message
    tools.write_text(tools.read_text().split("  - class_name: verl.tools.other")[0])
    [spec] = read_tools(str(tools))
    assert spec.class_name == "rlc_runtime.tools.answer.Gsm8kTool" and spec.config == {"type": "native"}
    interactions = tmp_path / "interaction.yaml"
    interactions.write_text('interaction:\n  - name: "gsm8k"\n'
                            '    class_name: "verl.interactions.gsm8k_interaction.Gsm8kInteraction"\n')
    notes = []
    [gsm8k] = read_interactions(str(interactions), notes)
    assert gsm8k.class_name == "rlc_runtime.tools.interaction.Gsm8kInteraction" and notes[0].position.line == 3


def test_the_search_tool_needs_its_service_url(tmp_path: Path) -> None:
    tools = tmp_path / "search.yaml"
    entry = ("tools:\n  - class_name: verl.tools.search_tool.SearchTool\n    config: {%s}\n"
             "    tool_schema: {type: function, function: {name: search}}\n")
    tools.write_text(entry % "topk: 3")
    with pytest.raises(CompileError) as caught:
        read_tools(str(tools))
    [error] = caught.value.diagnostics
    assert error.position.line == 3 and "needs config.retrieval_service_url" in error.message
    tools.write_text(entry % "retrieval_service_url: 'http://127.0.0.1:8000/retrieve'")
    assert read_tools(str(tools))[0].class_name == "rlc_runtime.tools.search.SearchTool"
