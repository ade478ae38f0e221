"""Preflight: each problem that would stop a job after it started is found before anything starts, one message
each, through `rlc launch --dry-run --preflight` (and `rlc launch`, which refuses and writes nothing).

Real parts throughout: data files written with pyarrow, the loopback Hub (tests/hubserver) for the token check, an
HTTP server on 127.0.0.1 for the reward server's /ping, a closed loopback port for one that does not answer. This
machine has no NVIDIA GPU, which the GPU check must say.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from test_launch import BASE
from typer.testing import CliRunner

from rlc.cli import app
from rlc.preflight import read_columns


def write_config(tmp_path: Path, **sections: dict) -> Path:
    tree = json.loads(json.dumps(BASE))
    tree["trainer"]["n_gpus_per_node"] = 1
    for name, values in sections.items():
        tree[name] = tree.get(name, {}) | values
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


def preflight(cfg: Path, *args: object) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["launch", str(cfg), "--run-dir", str(cfg.parent / "run"), "--dry-run",
                                      "--preflight", *map(str, args)])
    return result.exit_code, result.output


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed when the block ends: nothing listens there


@pytest.fixture
def ping_server() -> Iterator[str]:
    class Ping(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            self.send_response(200 if self.path == "/ping" else 404)
            self.end_headers()
            self.wfile.write(b'{"status": "ok"}')

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Ping)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_a_sound_cpu_run_passes(tmp_path: Path) -> None:
    code, out = preflight(write_config(tmp_path))
    assert code == 0, out
    assert "preflight: ok" in out


def test_missing_paths_and_a_missing_prompt_column(tmp_path: Path) -> None:
    table = pa.table({"question": ["1+1"], "data_source": ["x"]})
    pq.write_table(table, tmp_path / "wrong.parquet")
    cfg = write_config(tmp_path, data={"train_files": str(tmp_path / "wrong.parquet"),
                                       "val_files": str(tmp_path / "absent.parquet")},
                       actor_rollout_ref={**BASE["actor_rollout_ref"], "model": {"path": str(tmp_path / "nomodel")}})
    code, out = preflight(cfg)
    assert code == 1
    assert f"actor_rollout_ref.model.path: {tmp_path / 'nomodel'} does not exist" in out
    assert f"data.val_files: {tmp_path / 'absent.parquet'} does not exist" in out
    assert "has no `prompt` column (data.prompt_key) and no `messages`; its columns: question, data_source" in out
    assert "3 problem(s); nothing was started" in out  # the critic (not used by GRPO) is not asked
    # `rlc launch` runs the same checks first: refused, and the run directory is never written.
    result = CliRunner().invoke(app, ["launch", str(cfg), "--run-dir", str(tmp_path / "real")])
    assert result.exit_code == 1 and "does not exist" in result.output and not (tmp_path / "real").exists()


def test_column_names_from_headers(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_text('\n{"prompt": "p", "answer": 1}\n{"other": 2}\n')
    (tmp_path / "a.json").write_text('[{"messages": [], "x": 1}]')
    (tmp_path / "a.csv").write_text("prompt,answer\n1+1,2\n")
    (tmp_path / "a.arrow").write_bytes(b"")
    assert read_columns(tmp_path / "a.jsonl") == (["prompt", "answer"], "")
    assert read_columns(tmp_path / "a.json") == (["messages", "x"], "")
    assert read_columns(tmp_path / "a.csv") == (["prompt", "answer"], "")
    assert read_columns(tmp_path / "a.arrow")[0] is None


def test_upload_token_wandb_and_reward_server(tmp_path: Path, hub_server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc holding a W&B key
    url = f"http://127.0.0.1:{closed_port()}"
    cfg = write_config(tmp_path, hf_upload={"enabled": True, "repo_id": "tester/out"},
                       trainer={**BASE["trainer"], "n_gpus_per_node": 1, "logger": ["console", "wandb"]},
                       reward_api={"enable": True, "api_url": url})
    code, out = preflight(cfg)
    assert code == 1
    assert "hf_upload.enabled needs a Hugging Face token with write access, and none was found" in out
    assert "trainer.logger has wandb" in out
    assert f"the reward server does not answer {url}/ping" in out
    monkeypatch.setenv("HF_TOKEN", "hf_not_known_to_the_hub")
    assert "the Hub refused the Hugging Face token" in preflight(cfg)[1]


def test_reward_server_that_answers_and_a_token_the_hub_knows(tmp_path: Path, hub_server, ping_server: str,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", hub_server.add_token("hf_good"))
    cfg = write_config(tmp_path, hf_upload={"enabled": True, "repo_id": "tester/out"},
                       reward_api={"enable": True, "api_url": ping_server})
    code, out = preflight(cfg)
    assert code == 0, out
    assert "hf_good" not in out


def test_gpus_and_nodes_of_a_local_run(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, trainer={**BASE["trainer"], "device": "cuda", "n_gpus_per_node": 1, "nnodes": 2})
    code, out = preflight(cfg)
    assert code == 1 and "trainer.nnodes: set to 2, but --executor local runs on this machine only" in out
    code, out = preflight(cfg, "--nnodes", "1", "--run-dir", tmp_path / "one")
    assert code == 1 and "the plan needs NVIDIA GPUs, and nvidia-smi finds none here" in out  # this machine has none
    code, out = preflight(cfg, "--executor", "slurm", "--run-dir", tmp_path / "slurm")  # runs elsewhere: not asked
    assert code == 0, out


def test_run_directory_that_cannot_be_made(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("")
    result = CliRunner().invoke(app, ["launch", str(write_config(tmp_path)), "--run-dir",
                                      str(tmp_path / "afile" / "run"), "--dry-run", "--preflight"])
    assert result.exit_code == 1 and "afile is a file" in result.output


def test_hub_model_and_dataset_that_do_not_exist(tmp_path: Path, hub_server) -> None:
    """Asked once, by resolve, which every launch runs first: a dry run already refuses them."""
    cfg = write_config(tmp_path, data={"train_files": "tester/no-such-data"},
                       actor_rollout_ref={**BASE["actor_rollout_ref"], "model": {"path": "tester/no-such-model"}})
    code, out = preflight(cfg)
    assert code == 1
    assert f"model tester/no-such-model does not exist on {hub_server.url}" in out
    assert f"dataset tester/no-such-data does not exist on {hub_server.url}" in out


# Mounts cannot be made here, so the table of a cluster node is a fixture of mountinfo text (the kernel's format,
# optional fields and octal escapes included); the machine's own table is read for the end-to-end cases.
CLUSTER_MOUNTINFO = r"""22 1 0:21 / / rw,relatime shared:1 - overlay overlay rw,lowerdir=/l,upperdir=/u,workdir=/w
23 22 0:22 / /proc rw,nosuid - proc proc rw
24 22 0:23 / /tmp rw,nosuid,nodev shared:5 - tmpfs tmpfs rw,size=1024k
25 22 0:40 / /home rw,relatime shared:7 master:2 - nfs4 10.0.0.1:/home rw,vers=4.2
26 22 0:41 / /lustre rw - lustre 10.0.0.2@o2ib:/scratch rw,flock
27 26 0:42 / /lustre/local\040disk rw - xfs /dev/nvme0n1 rw
28 22 0:43 / /mnt/jfs rw - fuse.juicefs JuiceFS:vol rw,user_id=0
29 22 0:44 / /data rw - ext4 /dev/sda1 rw
30 22 0:45 / /data rw - beegfs beegfs_nodev rw
31 22 0:46 / /weird rw - zonefs /dev/sdb rw
"""


def test_mountinfo_is_parsed_and_the_deepest_latest_mount_holds_a_path() -> None:
    from rlc.mounts import mount_of, parse_mountinfo, sharing

    mounts = parse_mountinfo(CLUSTER_MOUNTINFO)
    assert len(mounts) == 10
    expected = {"/home/me/run": ("/home", "nfs4", "shared"), "/tmp/run": ("/tmp", "tmpfs", "memory"),
                "/tmpfoo/run": ("/", "overlay", "local"),  # /tmp is not a prefix of /tmpfoo
                "/lustre/a/b": ("/lustre", "lustre", "shared"),
                "/lustre/local disk/run": ("/lustre/local disk", "xfs", "local"),  # \040 is a space
                "/mnt/jfs/run": ("/mnt/jfs", "fuse.juicefs", "shared"),
                "/data/run": ("/data", "beegfs", "shared"),  # mounted over the ext4 one: the later mount wins
                "/weird": ("/weird", "zonefs", "unknown")}
    for path, (point, fstype, kind) in expected.items():
        mount = mount_of(Path(path), mounts)
        assert mount is not None and (mount.point, mount.fstype, sharing(mount.fstype)) == (point, fstype, kind)


def _fstype(path: Path) -> str:
    """The kernel's own name for the filesystem under `path`, by statfs (an independent reading of the mount)."""
    import subprocess

    found = subprocess.run(["stat", "-f", "-c", "%T", str(path)], capture_output=True, text=True, check=True)
    return found.stdout.strip()


def test_a_multi_node_run_directory_in_memory_is_refused_and_on_local_disk_warned(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, trainer={**BASE["trainer"], "device": "cuda", "n_gpus_per_node": 1, "nnodes": 2})
    if _fstype(Path("/dev/shm")) != "tmpfs":
        pytest.skip("/dev/shm is not a tmpfs here")
    shm = Path("/dev/shm") / f"rlc-preflight-{tmp_path.name}" / "run"
    try:
        code, out = preflight(cfg, "--executor", "slurm", "--run-dir", shm)
    finally:
        import shutil

        shutil.rmtree(shm.parent, ignore_errors=True)
    assert code == 1, out
    assert f"the run directory {shm} is on tmpfs (mounted at /dev/shm), this machine's memory: the other 1 " \
           "node(s) of the plan cannot see it" in out
    local = _fstype(tmp_path)
    if local not in ("ext2/ext3", "xfs", "btrfs", "overlayfs"):
        pytest.skip(f"{tmp_path} is on {local}, not a local disk")
    code, out = preflight(cfg, "--executor", "slurm", "--run-dir", tmp_path / "run2")
    assert code == 0, out
    assert "warning: preflight: the run directory" in out and "a node-local filesystem: the other 1 node(s)" in out
    code, out = preflight(cfg, "--executor", "slurm", "--nnodes", "1", "--run-dir", tmp_path / "run1")
    assert code == 0 and "the run directory" not in out, out  # one node: no other node to see it


def test_a_slurm_allocation_smaller_than_the_plan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = write_config(tmp_path, trainer={**BASE["trainer"], "device": "cuda", "n_gpus_per_node": 4, "nnodes": 2})
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("SLURM_JOB_NUM_NODES", "1")
    monkeypatch.setenv("SLURM_GPUS_ON_NODE", "2")
    code, out = preflight(cfg, "--executor", "ray", "--run-dir", tmp_path / "a")
    assert code == 1, out
    assert "the plan needs 2 node(s), and the SLURM allocation 4242 has 1 (SLURM_JOB_NUM_NODES)" in out
    assert "the plan needs 4 GPUs on each node, and the SLURM allocation 4242 has 2 per node (SLURM_GPUS_ON_NODE)" \
        in out
    # sbatch asks for an allocation of its own: the one it is submitted from is not compared
    code, out = preflight(cfg, "--executor", "slurm", "--run-dir", tmp_path / "b")
    assert code == 0 and "SLURM allocation" not in out, out
    monkeypatch.setenv("SLURM_JOB_NUM_NODES", "2")
    monkeypatch.delenv("SLURM_GPUS_ON_NODE")
    monkeypatch.setenv("SLURM_GPUS_PER_NODE", "a100:4")  # [type:]count
    code, out = preflight(cfg, "--executor", "ray", "--run-dir", tmp_path / "c")
    assert code == 0 and "SLURM allocation" not in out, out
    monkeypatch.delenv("SLURM_GPUS_PER_NODE")
    monkeypatch.setenv("SLURM_JOB_GPUS", "0,1,2")  # ids of the GPUs given on this node
    code, out = preflight(cfg, "--executor", "ray", "--run-dir", tmp_path / "d")
    assert code == 1 and "the SLURM allocation 4242 has 3 per node (SLURM_JOB_GPUS)" in out, out
    monkeypatch.delenv("SLURM_JOB_GPUS")
    code, out = preflight(cfg, "--executor", "ray", "--run-dir", tmp_path / "e")
    assert code == 0 and "the GPUs of the SLURM allocation 4242 were not checked" in out, out

def test_a_dist_checkpoint_to_start_from_must_be_there(tmp_path: Path) -> None:
    """use_dist_checkpointing: a path that does not exist, and a directory without a dist checkpoint, are refused
    before anything starts; a checkpoint directory that rlc saved (with dist_ckpt/metadata.json) passes."""
    empty, saved = tmp_path / "empty", tmp_path / "global_step_1" / "actor"
    empty.mkdir()
    (saved / "dist_ckpt").mkdir(parents=True)
    (saved / "dist_ckpt" / "metadata.json").write_text("{}")
    arf = json.loads(json.dumps(BASE["actor_rollout_ref"]))
    arf["actor"]["megatron"] = {"use_dist_checkpointing": True, "dist_checkpointing_path": str(tmp_path / "none")}
    arf["ref"] = {"megatron": {"use_dist_checkpointing": True, "dist_checkpointing_path": str(empty)}}
    arf["actor"]["use_kl_loss"] = True  # builds the reference
    cfg = write_config(tmp_path, actor_rollout_ref=arf, trainer={"device": "cuda"})
    cfg.write_text(cfg.read_text() + "backend: megatron\n")
    code, out = preflight(cfg)
    assert code == 1
    assert f"actor_rollout_ref.actor.megatron.dist_checkpointing_path: {tmp_path / 'none'} does not exist" in out
    assert f"actor_rollout_ref.ref.megatron.dist_checkpointing_path: {empty} holds no megatron dist checkpoint" in out
    arf["actor"]["megatron"]["dist_checkpointing_path"] = arf["ref"]["megatron"]["dist_checkpointing_path"] = \
        str(saved)
    cfg = write_config(tmp_path, actor_rollout_ref=arf, trainer={"device": "cuda"})
    cfg.write_text(cfg.read_text() + "backend: megatron\n")
    assert "dist_checkpointing_path" not in preflight(cfg)[1]
