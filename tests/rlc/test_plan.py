"""Launch plans: the numbers for each parallel layout, topology errors, and dry-run run directories."""

import json
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rlc.cli import app
from rlc.diagnostics import CompileError
from rlc.launch import LaunchRequest, prepare

EXAMPLES = Path(__file__).parents[2] / "examples" / "yaml"


def dry_run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["launch", *args, "--dry-run", "--offline"])
    return result.exit_code, result.output


def test_megatron_on_four_nodes(tmp_path: Path) -> None:
    code, out = dry_run(str(EXAMPLES / "megatron_qwen2_7b.yaml"), "--backend", "megatron", "--nnodes", "4",
                        "--executor", "slurm", "--run-dir", str(tmp_path / "run"),
                        "--set", "actor_rollout_ref.model.path=" + str(tmp_path))
    assert code == 0, out
    plan = json.loads((tmp_path / "run" / "plan.json").read_text())
    p, b = plan["topology"], plan["batch"]
    # 4 nodes x 8 GPUs = 32 ranks; tp 2 x pp 2 leaves 8 data-parallel ranks.
    assert (p["world_size"], p["tensor_parallel"], p["pipeline_parallel"], p["data_parallel"]) == (32, 2, 2, 8)
    # 512 prompts x 8 samples over 8 data-parallel ranks; mini-batch 128 x 8 / 8.
    assert (b["samples_per_step"], b["samples_per_rank"], b["mini_batch_per_rank"]) == (4096, 512, 128)
    # vLLM: tp 2 -> 16 engines, each on two neighbouring ranks of one node.
    assert len(p["rollout_groups"]) == 16 and p["rollout_groups"][:2] == [[0, 1], [2, 3]]
    assert [n["role"] for n in plan["nodes"]] == ["head", "worker", "worker", "worker"]
    assert plan["nodes"][3]["ranks"] == list(range(24, 32))
    assert p["train"] == {"resource": "GPU", "nodes": 4, "ranks_per_node": 8, "strategy": "STRICT_SPREAD"}
    assert p["rollout"] is None  # colocated: the training ranks generate
    for script in ("ray_head.sh", "ray_worker.sh", "submit_ray.sh", "sbatch.sh", "launch_local.sh"):
        if (tmp_path / "run" / script).exists():
            subprocess.run(["bash", "-n", str(tmp_path / "run" / script)], check=True)
    resolved = (tmp_path / "run" / "config.resolved.yaml").read_text()
    assert "nnodes: 4" in resolved and "backend: megatron" in resolved


def test_megatron_context_parallel_ranks_share_their_samples(tmp_path: Path) -> None:
    cp = [f"actor_rollout_ref.{role}.megatron.context_parallel_size=2" for role in ("actor", "ref")]
    code, out = dry_run(str(EXAMPLES / "megatron_qwen2_7b.yaml"), "--nnodes", "4", "--executor", "slurm",
                        "--run-dir", str(tmp_path / "run"), "--set", "actor_rollout_ref.model.path=" + str(tmp_path),
                        "--set", cp[0], "--set", cp[1])
    assert code == 0, out
    plan = json.loads((tmp_path / "run" / "plan.json").read_text())
    p, b = plan["topology"], plan["batch"]
    # 32 ranks, tp 2 x pp 2 x cp 2 per replica: 4 data-parallel ranks, each with 4096 / 4 samples.
    assert (p["world_size"], p["context_parallel"], p["data_parallel"]) == (32, 2, 4)
    assert (b["samples_per_rank"], b["mini_batch_per_rank"]) == (1024, 256)
    assert "parallel  data 4 x tensor 2 x pipeline 2 x context 2" in out


@pytest.mark.parametrize("executor", ["local", "ray", "slurm"])
def test_every_executor_renders_valid_bash(tmp_path: Path, executor: str) -> None:
    nnodes = "1" if executor == "local" else "2"
    code, out = dry_run(str(EXAMPLES / "grpo_gsm8k.yaml"), "--executor", executor, "--nnodes", nnodes,
                        "--run-dir", str(tmp_path / "run"), "--set", f"actor_rollout_ref.model.path={tmp_path}")
    assert code == 0, out
    scripts = sorted(p.name for p in (tmp_path / "run").glob("*.sh"))
    assert scripts == {"local": ["launch_local.sh"],
                       "ray": ["ray_head.sh", "ray_job.sh", "ray_worker.sh", "submit_ray.sh"],
                       "slurm": ["ray_head.sh", "ray_worker.sh", "sbatch.sh"]}[executor]
    for script in scripts:
        subprocess.run(["bash", "-n", str(tmp_path / "run" / script)], check=True)
    assert "#SBATCH --nodes=2" in (tmp_path / "run" / "sbatch.sh").read_text() if executor == "slurm" else True


def test_several_nodes_with_the_local_executor_are_refused(tmp_path: Path) -> None:
    code, out = dry_run(str(EXAMPLES / "grpo_gsm8k.yaml"), "--nnodes", "4", "--run-dir", str(tmp_path / "run"),
                        "--set", f"actor_rollout_ref.model.path={tmp_path}")
    assert code == 1 and "trainer.nnodes: set to 4, but --executor local runs on this machine only" in out
    assert not (tmp_path / "run").exists()


def test_too_many_nodes_for_the_batch(tmp_path: Path) -> None:
    request = LaunchRequest(EXAMPLES / "grpo_gsm8k.yaml", [f"actor_rollout_ref.model.path={tmp_path}",
                            "data.train_batch_size=8", "actor_rollout_ref.actor.ppo_mini_batch_size=8",
                            "actor_rollout_ref.rollout.n=1", "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=1"],
                            nnodes=2, run_dir=tmp_path / "run", offline=True)
    with pytest.raises(CompileError) as info:
        prepare(request)
    assert any("more than the 8 samples" in d.message for d in info.value.diagnostics)


def test_run_dir_is_not_overwritten_without_resume(tmp_path: Path) -> None:
    args = [str(EXAMPLES / "grpo_gsm8k.yaml"), "--run-dir", str(tmp_path / "run"),
            "--set", f"actor_rollout_ref.model.path={tmp_path}"]
    assert dry_run(*args)[0] == 0
    code, out = dry_run(*args)
    assert code == 1 and "already holds a run" in out
    assert dry_run(*args, "--resume")[0] == 0


def test_checkpoints_default_into_the_run_dir(tmp_path: Path) -> None:
    plan, _, _ = prepare(LaunchRequest(EXAMPLES / "grpo_gsm8k.yaml", [f"actor_rollout_ref.model.path={tmp_path}"],
                                       run_dir=tmp_path / "run", offline=True))
    resolved = (tmp_path / "run" / "config.resolved.yaml").read_text()
    assert f"default_local_dir: {tmp_path}/run/checkpoints" in resolved
    assert plan.driver[-2:] == ["rlc_runtime", str(tmp_path / "run")]


def test_rollout_on_gpus_of_its_own(tmp_path: Path) -> None:
    sets = [f"actor_rollout_ref.model.path={tmp_path}", "actor_rollout_ref.hybrid_engine=false",
            "actor_rollout_ref.rollout.n_gpus_per_node=4", "trainer.n_gpus_per_node=4"]
    plan, scripts, _ = prepare(LaunchRequest(EXAMPLES / "grpo_gsm8k.yaml", sets, nnodes=2, executor="ray",
                                             run_dir=tmp_path / "run", offline=True))
    p = plan.topology
    assert (p.world_size, p.rollout_placement, p.rollout_replicas) == (8, "separate", 4)  # 2 nodes x 4 GPUs, tp 2
    assert p.rollout_groups == [[0, 1], [2, 3], [4, 5], [6, 7]]  # ranks of the rollout's own group
    assert p.train.bundles() == p.rollout.bundles() == [{"GPU": 4.0}, {"GPU": 4.0}]
    assert plan.gpus_per_node == 8
    assert "--num-gpus=8" in (tmp_path / "run" / "ray_head.sh").read_text()


def test_separate_rollout_needs_gpus(tmp_path: Path) -> None:
    request = LaunchRequest(EXAMPLES / "grpo_gsm8k.yaml", [f"actor_rollout_ref.model.path={tmp_path}",
                                                           "actor_rollout_ref.hybrid_engine=false"],
                            run_dir=tmp_path / "run", offline=True)
    with pytest.raises(CompileError) as info:
        prepare(request)
    assert any("rollout needs GPUs of its own" in d.message for d in info.value.diagnostics)


def test_plan_json_topology_reads_back_as_the_compiler_built_it(tmp_path: Path) -> None:
    from rlc.topology import Topology

    sets = [f"actor_rollout_ref.model.path={tmp_path}", "actor_rollout_ref.hybrid_engine=false",
            "actor_rollout_ref.rollout.n_gpus_per_node=2", "trainer.n_gpus_per_node=4"]
    plan, _, _ = prepare(LaunchRequest(EXAMPLES / "grpo_gsm8k.yaml", sets, nnodes=2, executor="ray",
                                       run_dir=tmp_path / "run", offline=True))
    written = json.loads((tmp_path / "run" / "plan.json").read_text())["topology"]
    assert Topology.from_json(written) == plan.topology
    assert written["rollout"] == {"resource": "GPU", "nodes": 2, "ranks_per_node": 2, "strategy": "STRICT_SPREAD"}


def test_one_gpu_shared_by_trainer_and_rollout(tmp_path: Path) -> None:
    sets = [f"actor_rollout_ref.model.path={tmp_path}", "actor_rollout_ref.hybrid_engine=false",
            "actor_rollout_ref.rollout.share_trainer_gpu=true", "trainer.n_gpus_per_node=1",
            "algorithm.max_staleness=1", "actor_rollout_ref.rollout.tensor_model_parallel_size=1"]
    plan, _, _ = prepare(LaunchRequest(EXAMPLES / "grpo_gsm8k.yaml", sets, run_dir=tmp_path / "run", offline=True))
    p = plan.topology
    assert (p.rollout_placement, p.rollout_groups, plan.gpus_per_node) == ("shared", [[0]], 1)
    assert p.rollout == p.train  # the rollout's process joins the trainer's bundle: one GPU in all


@pytest.mark.parametrize(("sets", "message"), [
    (["trainer.device=cpu"], "needs a GPU"),
    (["trainer.n_gpus_per_node=2"], "is for a job of one GPU"),
    (["actor_rollout_ref.hybrid_engine=true"], "needs hybrid_engine false"),
])
def test_sharing_the_gpu_is_refused_where_it_cannot_work(tmp_path: Path, sets: list[str], message: str) -> None:
    base = [f"actor_rollout_ref.model.path={tmp_path}", "actor_rollout_ref.hybrid_engine=false",
            "actor_rollout_ref.rollout.share_trainer_gpu=true", "trainer.n_gpus_per_node=1"]
    with pytest.raises(CompileError) as info:
        prepare(LaunchRequest(EXAMPLES / "grpo_gsm8k.yaml", base + sets, run_dir=tmp_path / "run", offline=True))
    assert any(message in d.message for d in info.value.diagnostics), info.value.diagnostics
