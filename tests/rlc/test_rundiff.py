"""`rlc diff A B`: two configs, two run directories, or one of each, resolved and compared key by key; exit 0
equal, 1 different, 2 when a side cannot be read."""

from __future__ import annotations

from pathlib import Path

from test_launch import config, launch
from typer.testing import CliRunner

from rlc.cli import app
from rlc.rundiff import Change, changes


def diff(*args: object) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["diff", *map(str, args)])
    return result.exit_code, result.output


def test_changes_key_by_key_hand_worked() -> None:
    before = {"a": {"b": 1, "c": [1, 2]}, "gone": "x", "token": "hf_secret"}
    after = {"a": {"b": 2, "c": [1, 2], "new": {}}, "token": "hf_other"}
    assert changes(before, after) == [Change("a.b", 1, 2), Change("a.new", None, {}, "before"),
                                      Change("gone", "x", None, "after")]  # tokens differ, but both are redacted
    assert [c.line() for c in changes(before, after)] == ["~ a.b: 1 -> 2", "+ a.new: {}", '- gone: "x"']


def test_configs_and_run_directories(tmp_path: Path) -> None:
    first = config(tmp_path)
    second = tmp_path / "other.yaml"
    second.write_text(first.read_text().replace("total_epochs: 15", "total_epochs: 4"))
    code, out = diff(first, second)
    assert code == 1 and out.splitlines()[0] == "~ trainer.total_epochs: 15 -> 4"
    assert "1 key(s) differ" in out
    assert launch(first, "--run-dir", tmp_path / "run")[0] == 0
    code, out = diff(tmp_path / "run", first)
    assert code == 1  # the run directory holds where its checkpoints go; the file leaves the default
    assert [line.split(":")[0] for line in out.splitlines() if line[:1] in "~+-"] == ["~ trainer.default_local_dir"]
    assert launch(second, "--run-dir", tmp_path / "run2")[0] == 0
    code, out = diff(tmp_path / "run", tmp_path / "run2")
    assert code == 1 and "~ trainer.total_epochs: 15 -> 4" in out
    code, out = diff(tmp_path / "run", tmp_path / "run")
    assert code == 0 and "the same" in out
    assert diff(tmp_path / "missing.yaml", first)[0] == 2
