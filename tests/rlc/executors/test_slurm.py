"""`--executor slurm` against stand-ins for sbatch, squeue, sacct, scancel and srun on PATH.

SLURM cannot run here (no slurmctld, no nodes): these fakes are the boundary, and each records the arguments it
was called with so the tests see exactly what rlc asks of SLURM. The rendered sbatch.sh itself runs for real, with
the fakes standing in for srun/scontrol and a `ray` whose `status` reports fewer nodes than the plan needs.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from rlc.cli import app

ROOT = Path(__file__).parents[3]
CONFIG = {
    "algorithm": {"adv_estimator": "grpo"},
    "data": {"train_files": str(ROOT / "examples/data/arith_train.parquet"), "train_batch_size": 4,
             "max_prompt_length": 16, "max_response_length": 4},
    "actor_rollout_ref": {"model": {"path": str(ROOT / "examples/models/tiny-qwen2")},
                          "actor": {"ppo_mini_batch_size": 2, "ppo_micro_batch_size_per_gpu": 4},
                          "rollout": {"name": "hf", "n": 4}},
    "trainer": {"device": "cpu", "nnodes": 2, "n_gpus_per_node": 1, "total_training_steps": 2},
    "slurm": {"partition": "gpu a", "account": 'proj"x', "time": "1-00:00:00", "qos": "high", "constraint": "h100",
              "gres": "gpu:8", "container_image": "nvcr.io#nvidia/pytorch:24.01", "extra_sbatch": ["--mem=0"]},
    "ray_cluster": {"worker_timeout_s": 1},
}
FAKE = """#!/bin/bash
"{python}" -c 'import json, sys; print(json.dumps(sys.argv[1:]))' "$(basename "$0")" "$@" >> "{calls}"
reply="{replies}/$(basename "$0")"
[ -f "$reply.err" ] && cat "$reply.err" >&2
[ -f "$reply" ] && cat "$reply"
exit "$(cat "$reply.rc" 2>/dev/null || echo 0)"
"""


class Slurm:
    """The fake tools' directory, their replies and the calls they received."""

    def __init__(self, root: Path) -> None:
        self.bin, self.replies, self.calls = root / "bin", root / "replies", root / "calls.jsonl"
        self.bin.mkdir()
        self.replies.mkdir()
        for name in ("sbatch", "squeue", "sacct", "scancel", "srun", "scontrol", "ray"):
            (self.bin / name).write_text(FAKE.format(python=sys.executable, calls=self.calls, replies=self.replies))
            (self.bin / name).chmod(0o755)

    def reply(self, tool: str, stdout: str = "", rc: int = 0, stderr: str = "") -> None:
        (self.replies / tool).write_text(stdout)
        (self.replies / f"{tool}.rc").write_text(str(rc))
        (self.replies / f"{tool}.err").write_text(stderr)

    def called(self, tool: str) -> list[list[str]]:
        """Each call the fake tools logged, read as a stream of JSON arrays: tools started at once (srun's nodes)
        append to one file, and a line may meet the next without its newline between them."""
        text = self.calls.read_text() if self.calls.exists() else ""
        decoder, calls, at = json.JSONDecoder(), [], 0
        while (at := len(text) - len(text[at:].lstrip())) < len(text):
            call, at = decoder.raw_decode(text, at)
            calls.append(call)
        return [call[1:] for call in calls if call[0] == tool]


@pytest.fixture
def slurm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Slurm:
    fake = Slurm(tmp_path)
    monkeypatch.setenv("PATH", f"{fake.bin}:/usr/bin:/bin")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # where Ray looks for its token: ~/.ray/auth_token
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
    (tmp_path / "home" / ".ray").mkdir(parents=True)
    (tmp_path / "home" / ".ray" / "auth_token").write_text("not read by rlc")
    fake.reply("sbatch", "4242;cluster2\n")
    return fake


def _launch(tmp_path: Path, extra: dict | None = None) -> tuple[int, str, Path]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    config, run_dir = tmp_path / "cfg.yaml", tmp_path / "run"
    tree = json.loads(json.dumps(CONFIG))
    for key, value in (extra or {}).items():
        tree[key] = {**tree.get(key, {}), **value}
    config.write_text(yaml.safe_dump(tree))
    result = CliRunner().invoke(app, ["launch", str(config), "--executor", "slurm", "--run-dir", str(run_dir),
                                      "--offline"])
    return result.exit_code, result.output, run_dir


def _rlc(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


def test_launch_submits_with_the_clusters_options_and_records_the_job(slurm: Slurm, tmp_path: Path) -> None:
    code, out, run_dir = _launch(tmp_path)
    assert code == 0, out
    assert slurm.called("sbatch") == [["--parsable", str(run_dir / "sbatch.sh")]]
    job = json.loads((run_dir / "job.json").read_text())
    assert (job["executor"], job["job_id"], job["cluster"]) == ("slurm", "4242", "cluster2")
    assert f"rlc status {run_dir}" in out and f"rlc logs {run_dir} -f" in out and f"rlc stop {run_dir}" in out
    script = (run_dir / "sbatch.sh").read_text()
    options = [word for line in script.splitlines() if line.startswith("#SBATCH")
               for word in shlex.split(line.removeprefix("#SBATCH"))]
    for expected in ("--partition=gpu a", '--account=proj"x', "--time=1-00:00:00", "--qos=high",
                     "--constraint=h100", "--gres=gpu:8", "--mem=0", "--nodes=2"):
        assert expected in options
    assert not any(o.startswith("--gpus-per-node") for o in options)  # gres replaces it
    assert "--container-image='nvcr.io#nvidia/pytorch:24.01'" in script
    assert f"--container-mounts={run_dir}:{run_dir}" in script


def test_status_logs_and_stop_ask_slurm_about_the_recorded_job(slurm: Slurm, tmp_path: Path) -> None:
    _, _, run_dir = _launch(tmp_path)
    slurm.reply("squeue", "RUNNING\n")
    code, out = _rlc("status", str(run_dir))
    assert code == 0 and "RUNNING (SLURM job 4242)" in out
    assert slurm.called("squeue")[-1] == ["--noheader", "--clusters=cluster2", "--jobs", "4242", "--format=%T"]
    slurm.reply("squeue", "")  # squeue forgets finished jobs; sacct remembers
    slurm.reply("sacct", "FAILED\n")
    code, out = _rlc("status", str(run_dir))
    assert code == 1 and "FAILED (SLURM job 4242)" in out
    (run_dir / "slurm-4242.out").write_text("step 1/2 score 0.5\n")
    code, out = _rlc("logs", str(run_dir))
    assert code == 0 and "step 1/2 score 0.5" in out
    code, out = _rlc("stop", str(run_dir))
    assert code == 0 and slurm.called("scancel") == [["--clusters=cluster2", "4242"]]


def test_nothing_submitted_is_an_error(slurm: Slurm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    slurm.reply("sbatch", "", rc=1, stderr="sbatch: error: invalid partition specified: gpu a\n")
    code, out, run_dir = _launch(tmp_path)
    assert code == 1 and "nothing submitted: sbatch exited 1" in out and "invalid partition" in out
    assert not (run_dir / "job.json").exists()
    (slurm.bin / "sbatch").unlink()
    code, out, _ = _launch(tmp_path / "again")
    assert code == 1 and "nothing submitted: sbatch is not on PATH" in out
    code, out = _rlc("status", str(run_dir))
    assert code == 1 and "no job was started from this directory" in out


def test_token_authentication_without_a_token_is_refused_before_submitting(slurm: Slurm, tmp_path: Path) -> None:
    (tmp_path / "home" / ".ray" / "auth_token").unlink()
    code, out, run_dir = _launch(tmp_path / "a")
    assert code == 1 and "ray_cluster.auth is token, but no Ray token is here" in out
    assert slurm.called("sbatch") == []
    code, out, run_dir = _launch(tmp_path / "b", {"ray_cluster": {"auth": "disabled"}})
    assert code == 0, out
    assert "export RAY_AUTH_MODE=disabled" in (run_dir / "sbatch.sh").read_text()


def test_the_batch_script_fails_plainly_when_ray_nodes_do_not_join(slurm: Slurm, tmp_path: Path) -> None:
    _, _, run_dir = _launch(tmp_path, {"slurm": {"container_image": None}})  # `ray status` runs on this host
    slurm.reply("scontrol", "node1\nnode2\n")
    slurm.reply("srun", "10.1.2.3\n")
    slurm.reply("ray", "Node status\nActive:\n 1 node_0123abcd\nPending:\n (no pending nodes)\n")
    done = subprocess.run(["bash", str(run_dir / "sbatch.sh")], capture_output=True, text=True, timeout=60,
                          env={"PATH": f"{slurm.bin}:/usr/bin:/bin", "SLURM_JOB_NODELIST": "node[1-2]"})
    assert done.returncode != 0
    assert "1 of 2 Ray node(s) joined the head at 10.1.2.3:6379 within 1 s" in done.stderr
    assert slurm.called("ray")[0] == ["status", "--address=10.1.2.3:6379"]
    started = [call for call in slurm.called("srun") if "bash" in call]
    assert started[0][-3:] == ["bash", str(run_dir / "ray_head.sh"), "10.1.2.3"]
    assert started[0][:4] == ["--nodes=1", "--ntasks=1", "-w", "node1"]
    assert not any("rlc_runtime" in call for call in slurm.called("srun"))  # the driver never started


def test_a_template_of_the_users_own(slurm: Slurm, tmp_path: Path) -> None:
    template = tmp_path / "mine.sh.j2"
    template.write_text("#!/bin/bash\n#SBATCH --partition={{ slurm.partition | sbatch }}\n"
                        "{% include '_common.sh.j2' %}\nsite_setup && \"$PYTHON\" -m rlc_runtime \"$RUN_DIR\"\n")
    code, out, run_dir = _launch(tmp_path, {"slurm": {"template": str(template)}})
    assert code == 0, out
    script = (run_dir / "sbatch.sh").read_text()
    assert '#SBATCH --partition="gpu a"' in script and "site_setup &&" in script and "RUN_DIR=" in script
    template.write_text("{% if %}")
    code, out, _ = _launch(tmp_path / "broken", {"slurm": {"template": str(template)}})
    assert code == 1 and f"{template}:1:" in out and "slurm.template" in out


def test_an_extra_sbatch_line_must_be_one_option(tmp_path: Path) -> None:
    code, out, _ = _launch(tmp_path, {"slurm": {"extra_sbatch": ["--mail-user me@example.org"]}})
    assert code == 1 and "is not one sbatch option: write `--name=value`" in out
