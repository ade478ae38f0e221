"""Config values that try to break out of shell quoting stay literal strings in every rendered script."""

import os
import stat
import subprocess
from pathlib import Path

import pytest

from rlc.launch import LaunchRequest, prepare

EXAMPLES = Path(__file__).parents[2] / "examples" / "yaml"
HOSTILE = [
    "x'; touch {canary}; '",
    'x"; touch {canary}; "',
    "`touch {canary}`",
    "$(touch {canary})",
    "a\ntouch {canary}\n",
    "x$IFS;touch$IFS{canary};",
]


def fake_bin(tmp_path: Path) -> Path:
    """Stand-ins for `ray` and python at the process boundary: this test is about quoting, not about training.
    Each records its argv so the test can see the hostile value arrive intact, as one argument."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("ray", "python-fake", "hostname", "scontrol", "srun", "sleep"):
        tool = bin_dir / name
        reply = "echo n1" if name == "scontrol" else ":"
        tool.write_text(f'#!/bin/bash\nprintf "%s\\0" "{name}" "$@" >> "{tmp_path}/calls"\n{reply}\n')
        tool.chmod(tool.stat().st_mode | stat.S_IEXEC)
    return bin_dir


@pytest.mark.parametrize("executor", ["local", "ray", "slurm"])
@pytest.mark.parametrize("hostile", HOSTILE)
def test_hostile_values_run_nothing(tmp_path: Path, executor: str, hostile: str) -> None:
    canary = tmp_path / "owned"
    value = hostile.format(canary=canary)
    config = tmp_path / "cfg.yaml"
    text = (EXAMPLES / "grpo_gsm8k.yaml").read_text().replace('"qwen2_7b_function_rm"', _yaml_string(value))
    config.write_text(text.replace("path: Qwen/Qwen2-7B-Instruct", f"path: {tmp_path}"))
    run_dir = tmp_path / f"run {value[:3]}'".replace("\n", " ")  # the run directory's own name is hostile too
    plan, scripts, _ = prepare(LaunchRequest(config, executor=executor, run_dir=run_dir, offline=True))
    assert value in (run_dir / "config.resolved.yaml").read_text() or "\n" in value
    bin_dir = fake_bin(tmp_path)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "RAY_ADDRESS": "127.0.0.1:1",
           "SLURM_JOB_NODELIST": "n1", "RLC_SUBMISSION_ID": value}
    for script in scripts:
        subprocess.run(["bash", "-n", str(script)], check=True)
        text = script.read_text().replace(plan.driver[0], str(bin_dir / "python-fake"))
        script.write_text(text)
        subprocess.run(["bash", str(script), "127.0.0.1"], env=env, capture_output=True, timeout=60)
    assert not canary.exists(), f"{executor}: {value!r} ran as code"
    calls = (tmp_path / "calls").read_bytes().split(b"\0") if (tmp_path / "calls").exists() else []
    assert str(run_dir).encode() in calls, "the driver got the run directory as one argument"


def _yaml_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def test_control_characters_in_the_run_dir_are_refused(tmp_path: Path) -> None:
    from rlc.diagnostics import CompileError

    config = tmp_path / "cfg.yaml"
    config.write_text((EXAMPLES / "grpo_gsm8k.yaml").read_text().replace("Qwen/Qwen2-7B-Instruct", str(tmp_path)))
    with pytest.raises(CompileError, match="control character"):
        prepare(LaunchRequest(config, run_dir=tmp_path / "a\nb", offline=True))
