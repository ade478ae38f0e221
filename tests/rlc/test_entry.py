"""`rlc validate` through the entry point's own reader (no typer) prints and exits exactly as the typer command
`rlc.cli.validate` does, which stays the reference; command lines outside the plain form go to typer."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rlc.cli import app
from rlc.entry import _parse_validate

EXAMPLE = Path(__file__).parents[2] / "examples" / "yaml" / "grpo_gsm8k.yaml"


def quick(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rlc.cli", *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("extra", [(), ("--format", "json"), ("-s", "trainer.nnodes=x", "--set", "~data.val_files")])
def test_quick_validate_prints_what_the_typer_command_prints(tmp_path: Path, extra: tuple[str, ...]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("trainer:\n  nnodes: x\n  bogus: 1\ndata: {train_files: a.parquet}\n")
    args = ["validate", str(EXAMPLE), str(bad), str(tmp_path / "absent.yaml"), *extra]
    reference = CliRunner().invoke(app, args)
    done = quick(*args)
    assert (done.returncode, done.stdout, done.stderr) == (reference.exit_code, reference.stdout, reference.stderr)
    assert "bogus" in done.stdout + done.stderr


def test_validate_runs_without_typer() -> None:
    probe = ("import sys\nfrom rlc.entry import quick_validate\ntry:\n    quick_validate(['validate', sys.argv[1]])\n"
             "except SystemExit as e:\n    print(e.code, 'typer' in sys.modules, 'click' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", probe, str(EXAMPLE)], capture_output=True, text=True, timeout=120)
    assert done.stdout.split()[-3:] == ["0", "False", "False"], done.stderr


def test_other_command_lines_go_to_typer() -> None:
    for argv in (["validate"], ["validate", "--help"], ["validate", "f.yaml", "-s", "key", "value"],
                 ["validate", "f.yaml", "--format", "xml"], ["validate", "f.yaml", "--set=a=1"], ["show", "f.yaml"]):
        assert _parse_validate(argv) is None, argv
    assert _parse_validate(["validate", "a.yaml", "-s", "x=1", "b.yaml", "--format", "json"]) == (
        [Path("a.yaml"), Path("b.yaml")], ["x=1"], "json")
    done = quick("validate", str(EXAMPLE), "-s", "trainer.nnodes", "2")
    assert done.returncode == 2 and "is not key=value; write `-s trainer.nnodes=VALUE`" in done.stderr
