"""Config values that try to break out of shell quoting stay literal strings in every rendered script."""

import os
import re
import stat
import subprocess
from pathlib import Path

import pytest

from rlc.diagnostics import CompileError
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
        # `ray status` lists more nodes than any plan waits for, so the scripts go on at once
        reply = {"scontrol": "echo n1", "ray": "[ \"$1\" != status ] || printf 'Active:\\n 9 node_fake\\n'"}.get(
            name, ":")
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
    config = tmp_path / "cfg.yaml"
    config.write_text((EXAMPLES / "grpo_gsm8k.yaml").read_text().replace("Qwen/Qwen2-7B-Instruct", str(tmp_path)))
    with pytest.raises(CompileError, match="control character"):
        prepare(LaunchRequest(config, run_dir=tmp_path / "a\nb", offline=True))


def sbatch_arguments(script: str) -> list[str]:
    """The arguments sbatch reads from `#SBATCH` lines, by the rules of `_get_argument` in Slurm's
    src/sbatch/opt.c, transcribed as the reference: whitespace separates; ' or " groups up to the same quote; a
    backslash takes the next character as it is, inside quotes too; an unquoted # ends the line; nothing expands."""
    arguments = []
    for line in script.splitlines():
        if not line.startswith("#SBATCH"):
            continue
        word, quote, escaped, started = "", "", False, False
        for char in line[len("#SBATCH"):] + " ":
            if escaped:
                word, escaped, started = word + char, False, True
            elif char == "\\":
                escaped = True
            elif quote and char == quote:
                quote = ""
            elif quote:
                word += char
            elif char in "'\"":
                quote, started = char, True
            elif char == "#":
                break
            elif char.isspace():
                if started or word:
                    arguments.append(word)
                word, started = "", False
            else:
                word += char
        if word or started:
            arguments.append(word)
    return arguments


def slurm_file_name(pattern: str, job_id: int) -> str:
    """sbatch(1) "filename pattern": %% is %, %j the job id; a name with a backslash is taken literally."""
    if "\\" in pattern:
        return pattern
    return re.sub(r"%(.)", lambda m: "%" if m.group(1) == "%" else str(job_id) if m.group(1) == "j" else m[0],
                  pattern)


@pytest.mark.parametrize("name", ["it's", "100% #done %j", 'say "hi" $(touch x)', "back\\slash %j", "tab\tbed"])
def test_sbatch_output_names_the_run_dir(tmp_path: Path, name: str) -> None:
    config = tmp_path / "cfg.yaml"
    config.write_text((EXAMPLES / "grpo_gsm8k.yaml").read_text().replace("Qwen/Qwen2-7B-Instruct", str(tmp_path)))
    run_dir = tmp_path / name
    if "\t" in name:  # a control character cannot be written on an #SBATCH line: refused, with a message
        with pytest.raises(CompileError, match="control character"):
            prepare(LaunchRequest(config, executor="slurm", run_dir=run_dir, offline=True))
        return
    _, scripts, _ = prepare(LaunchRequest(config, executor="slurm", run_dir=run_dir, offline=True))
    arguments = sbatch_arguments((run_dir / "sbatch.sh").read_text())
    (output,) = [a.removeprefix("--output=") for a in arguments if a.startswith("--output=")]
    expected = "slurm-%j.out" if "\\" in name else "slurm-42.out"
    assert slurm_file_name(output, 42) == f"{run_dir}/{expected}"
    assert "--job-name=verl_grpo_example_gsm8k_qwen2_7b_function_rm" in arguments
    for script in scripts:
        subprocess.run(["bash", "-n", str(script)], check=True)


def test_a_nul_in_the_experiment_name_is_refused_and_never_breaks_a_script(tmp_path: Path) -> None:
    """Validation refuses control characters; rendering stays safe even for a config that skipped validation."""
    import sys

    from rlc.loader import load_config
    from rlc.plan import make_plan
    from rlc.render import render_run_dir

    config = tmp_path / "cfg.yaml"
    clean = (EXAMPLES / "grpo_gsm8k.yaml").read_text().replace("path: Qwen/Qwen2-7B-Instruct", f"path: {tmp_path}")
    config.write_text(clean.replace('"qwen2_7b_function_rm"', '"a\\0b\\x01c"'))
    with pytest.raises(CompileError, match="control character"):
        prepare(LaunchRequest(config, run_dir=tmp_path / "refused", offline=True))
    config.write_text(clean)
    bin_dir = fake_bin(tmp_path)
    for executor in ("local", "slurm"):
        run_dir = tmp_path / executor
        loaded = load_config(config).config
        loaded.trainer.experiment_name = "a\0b\x01c"
        plan = make_plan(loaded, str(run_dir), executor, python=sys.executable)
        assert "\0" in plan.name
        script = render_run_dir(plan, "{}\n", python=sys.executable)[-1]
        script.write_text(script.read_text().replace(plan.driver[0], str(bin_dir / "python-fake")))
        env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_JOB_NODELIST": "n1"}
        proc = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        driver = b"\0".join([b"python-fake", b"-m", b"rlc_runtime", str(run_dir).encode()]) + b"\0"
        assert driver in (tmp_path / "calls").read_bytes(), f"{executor}: the driver did not start"


def test_a_nul_never_reaches_a_shell_word() -> None:
    from rlc.render import environment

    with pytest.raises(CompileError, match="NUL"):
        environment().from_string("x={{ v | q }}").render(v="a\0b")
