"""Bad files get one clear message with a position, never a traceback."""

from pathlib import Path

import pytest

from rlc.diagnostics import CompileError
from rlc.source import MAX_FILE_BYTES, load_file, load_text


def _error(tmp_path: Path, content: bytes | str) -> str:
    file = tmp_path / "cfg.yaml"
    file.write_bytes(content.encode() if isinstance(content, str) else content)
    with pytest.raises(CompileError) as info:
        load_file(file)
    (diagnostic,) = info.value.diagnostics
    return diagnostic.format()


def test_positions_of_keys_and_items() -> None:
    source = load_text("a:\n  b: 1\n  c:\n    - x\n    - y\n", "f.yaml")
    assert source.data == {"a": {"b": 1, "c": ["x", "y"]}}
    assert (source.positions[("a", "b")].line, source.positions[("a", "b")].col) == (2, 3)
    assert source.positions[("a", "c", 1)].line == 5
    assert source.position(("a", "b", "missing")).line == 2


def test_syntax_error_has_position(tmp_path: Path) -> None:
    assert _error(tmp_path, "a: [1, 2\nb: 3\n").startswith(f"{tmp_path}/cfg.yaml:")


def test_tabs(tmp_path: Path) -> None:
    assert "tabs cannot indent YAML" in _error(tmp_path, "a:\n\tb: 1\n")


def test_duplicate_keys(tmp_path: Path) -> None:
    assert "duplicate key" in _error(tmp_path, "a: 1\nb: 2\na: 3\n")


@pytest.mark.parametrize(("content", "expected"), [
    ("", "empty document"),
    ("# only a comment\n", "empty document"),
    ("- 1\n- 2\n", "is a list, not a mapping"),
    ("just text\n", "is a single value, not a mapping"),
    (b"\xff\xfeh\x00i\x00", "binary file"),
    (b"a: \xe9t\xe9\n", "not UTF-8"),
])
def test_not_a_config(tmp_path: Path, content: bytes | str, expected: str) -> None:
    assert expected in _error(tmp_path, content)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(CompileError, match="file not found"):
        load_file(tmp_path / "nope.yaml")
    with pytest.raises(CompileError, match="is a directory"):
        load_file(tmp_path)


def test_alias_bomb_is_refused(tmp_path: Path) -> None:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    names = "abcdefghi"
    lines += [f"{c}: &{c} [" + ",".join([f"*{names[i]}"] * 9) + "]" for i, c in enumerate(names[1:])]
    assert "alias bomb" in _error(tmp_path, "\n".join(lines) + "\n")


def test_huge_file_is_refused(tmp_path: Path) -> None:
    assert "MiB" in _error(tmp_path, "a: " + "x" * (MAX_FILE_BYTES * 8) + "\n")
