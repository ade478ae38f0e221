"""Bad files get one clear message with a position, never a traceback."""

import os
from pathlib import Path

import pytest

from rlc.diagnostics import CompileError
from rlc.source import MAX_FILE_BYTES, Source, load_file, load_text


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


def test_merge_keys_take_positions_from_where_each_key_was_written() -> None:
    text = "base: &b\n  x: 1\n  y: 2\nother:\n  <<: *b\n  y: 3\n"
    source = load_text(text, "f.yaml")
    assert source.data["other"] == {"x": 1, "y": 3}
    where = {key: (source.positions[("other", key)].line, source.positions[("other", key)].col) for key in "xy"}
    assert where == {"x": (2, 3), "y": (6, 3)}  # x comes from the anchor's line, y is the override's


@pytest.mark.parametrize("depth", [2000, 100_000])
def test_deep_nesting_is_bounded(tmp_path: Path, depth: int) -> None:
    message = _error(tmp_path, "a: " + "[" * depth + "]" * depth + "\n")
    assert "nested more than 64 levels" in message and "cfg.yaml:1:" in message


def test_block_nesting_is_bounded(tmp_path: Path) -> None:
    text = "".join("  " * level + f"k{level}:\n" for level in range(100)) + "  " * 100 + "v: 1\n"
    assert "nested more than 64 levels" in _error(tmp_path, text)


@pytest.mark.parametrize("tag", ["!!python/object:os.system {}", "!!python/name:os.system", "!custom 3"])
def test_tags_other_than_yaml_own_are_refused(tmp_path: Path, tag: str) -> None:
    message = _error(tmp_path, f"trainer:\n  x: {tag}\n")
    assert "is not supported: a config holds plain values" in message and "trainer.x" in message


@pytest.mark.parametrize(("value", "words"), [("!!set {x, y}", "set (`!!set`)"),
                                              ("!!binary aGk=", "binary (`!!binary`)")])
def test_sets_and_binary_are_refused(tmp_path: Path, value: str, words: str) -> None:
    assert f"{words} values are not supported" in _error(tmp_path, f"trainer:\n  x: {value}\n")


def test_syntax_error_quotes_the_line(tmp_path: Path) -> None:
    message = _error(tmp_path, "a: 1\nb:  c: 2\n")
    assert message.splitlines()[1:] == ["    | b:  c: 2", "    |      ^"]


def test_fifo_and_device_are_refused(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.yaml"
    os.mkfifo(fifo)  # reading it would block forever if opened the ordinary way
    with pytest.raises(CompileError, match="is a FIFO, not a regular file"):
        load_file(fifo)
    with pytest.raises(CompileError, match="is a device, not a regular file"):
        load_file("/dev/zero")


# The quick reader (libyaml) against ruamel, the reference, on real files and on forms where the YAML versions or
# the two parsers could differ. `_ruamel` is load_text with the quick reader switched off.
REPO = Path(__file__).parents[2]
VERL = Path(os.environ.get("RLC_VERL_CHECKOUT", "/tmp/verl_shell"))
TRICKY = """\
a: 1
b: -0.0
c: [1., 1e5, +5, -7, 0, 2.5e-3, "3", '4']
d: {x: ~, y: null, z: , w: True, v: FALSE}
e: yes   # a string in YAML 1.2
f: |
  two
  lines
g: >-
  folded
  text
h:
  - - nested
    - seq
  - k: v
    l: [x, {m: n}]
"1": one
2: two
i: ünïcode ✓
j: plain
  continued
"""


def _ruamel(text: str) -> Source:
    from unittest import mock

    with mock.patch("rlc.source._quick_load", return_value=None):
        return load_text(text, "f.yaml")


def _typed(tree: object) -> object:
    """The tree with each scalar's type spelled out (1 == 1.0 == True in Python)."""
    if isinstance(tree, dict):
        return {k: _typed(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_typed(v) for v in tree]
    return (type(tree).__name__, repr(tree))


def _yaml_files() -> list[Path]:
    return sorted([*REPO.glob("examples/**/*.yaml"), *REPO.glob("tests/**/*.yaml"), *VERL.glob("verl/**/*.yaml")])


def test_the_quick_reader_gives_ruamels_tree_and_positions() -> None:
    from rlc.source import _quick_load

    forms = ["? a\n: b\nc: d\n", "---\na: 1\n...\n", "a: 1\r\nb:\r\n  c: [1, 2]\r\n", "a:\n- x\n- y: 1\n  z: 2\n",
             "a: {b: [1, {c: d}],\n    e: f}\n", "a: |+\n  keep\n\nb: 1\n", "1.5: a\ntrue: b\n~: c\n", "a: -\n",
             "\ta: 1\n", "a: b: c\n", "a: 1\n---\nb: 2\n", "a: @x\n"]
    texts = {"tricky": TRICKY} | {form: form for form in forms} | {str(f): f.read_text() for f in _yaml_files()}
    quick_read = 0
    for label, text in texts.items():
        try:
            reference = _ruamel(text)
        except CompileError:
            assert _quick_load(text, "f.yaml") is None, label  # an error is ruamel's to report
            continue
        quick = _quick_load(text, "f.yaml")
        if quick is not None:
            quick_read += 1
            assert _typed(quick.data) == _typed(reference.data), label
            assert quick.positions == reference.positions, label
    assert _quick_load(TRICKY, "f.yaml") is not None
    assert quick_read >= 5, quick_read


@pytest.mark.parametrize("text", ["a: &x 1\nb: *x\n", "a: !!str 1\n", "%YAML 1.1\n---\na: yes\n", "a: 0o17\n",
                                  "a: 1_000\n", "a: .inf\n", "a: 2024-01-01\n", "a: 1\na: 2\n", "? [a]\n: 1\n",
                                  "<<: {a: 1}\n", "- a\n", "", "a: [1\n", "a: 017\n"])
def test_forms_the_quick_reader_leaves_to_ruamel(text: str) -> None:
    from rlc.source import _quick_load

    assert _quick_load(text, "f.yaml") is None
