"""`rlc --version`, `rlc explain KEY` and shell completion of keys and their fixed values, through the real CLI."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from rlc import __version__
from rlc.cli import app

ROOT = Path(__file__).parents[2]


def _offered(words: str) -> set[str]:
    """What zsh would offer after typing `words` (typer's zsh protocol: the words in one variable; each candidate
    is the first quoted string of its line)."""
    out = CliRunner().invoke(app, [], prog_name="rlc",
                             env={"_RLC_COMPLETE": "complete_zsh", "_TYPER_COMPLETE_ARGS": words}).output
    return {m.group(1) for m in re.finditer(r'^(?:_arguments .*?\(\()?"([^"]*)"', out, re.M)}


def test_version_is_the_package_version() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output == f"rlc {__version__}\n"
    assert __version__ in (ROOT / "pyproject.toml").read_text()


def test_set_completes_keys_one_level_at_a_time_then_literal_values() -> None:
    assert _offered("rlc validate cfg.yaml --set trainer.n_g") == {"trainer.n_gpus_per_node="}
    offered = _offered("rlc validate cfg.yaml --set actor_rollout_ref.r")
    assert {"actor_rollout_ref.rollout.", "actor_rollout_ref.ref."} <= offered  # sections end in a dot
    assert not any(key.rstrip(".=").count(".") > 1 for key in offered)
    assert _offered("rlc launch cfg.yaml -s actor_rollout_ref.rollout.name=") == {
        f"actor_rollout_ref.rollout.name={v}" for v in ("vllm", "hf", "sglang", "trtllm")}
    assert _offered("rlc validate cfg.yaml --set +trainer.val_before_train=f") == {"+trainer.val_before_train=false"}
    assert _offered("rlc validate cfg.yaml --set trainer.project_name=") == set()  # a free value


def test_explain_completes_keys() -> None:
    assert _offered("rlc explain algorithm.adv_est") == {"algorithm.adv_estimator"}
    assert _offered("rlc show cfg.yaml --explain trainer.nno") == {"trainer.nnodes"}


def test_explain_says_meaning_default_status_and_values() -> None:
    result = CliRunner().invoke(app, ["explain", "actor_rollout_ref.rollout.name"])
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert lines[0] == "actor_rollout_ref.rollout.name  [some values]"
    assert lines[1:3] == ["  default: 'vllm'", "  values:  vllm, hf, sglang, trtllm"]
    assert "sglang: warns, rlc runs vllm instead" in lines[3]

    missing = CliRunner().invoke(app, ["explain", "rollout.nme"])
    assert missing.exit_code == 1
    assert "`rollout.nme` is not a config key; did you mean `actor_rollout_ref.rollout.name`" in missing.output


def test_completion_and_help_do_not_import_the_models_or_rich() -> None:
    """The shell runs rlc on every Tab: it must read the key table, not build ~300 pydantic models (typer itself
    imports pydantic to coerce parameters, so that is not the measure)."""
    probe = ("import sys, os; os.environ.update(_RLC_COMPLETE='complete_zsh', "
             "_TYPER_COMPLETE_ARGS='rlc validate c.yaml --set trainer.dev')\n"
             "from rlc.cli import app\n"
             "try:\n    app(prog_name='rlc')\nexcept SystemExit:\n    pass\n"
             "print([m for m in ('rlc.config', 'rlc.loader', 'rich', 'jsonschema') if m in sys.modules])")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert "trainer.device=" in done.stdout and done.stdout.strip().endswith("[]"), done.stdout + done.stderr
    helped = subprocess.run([sys.executable, "-c", "import sys\nfrom rlc.cli import app\ntry:\n    app(['--help'])\n"
                             "except SystemExit:\n    pass\nprint(sorted(m for m in ('pydantic', 'rich', 'ruamel') "
                             "if m in sys.modules))"], capture_output=True, text=True, timeout=60, check=True)
    assert helped.stdout.strip().endswith("[]"), helped.stdout
