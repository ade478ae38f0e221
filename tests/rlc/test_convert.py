"""`rlc convert` and the override grammar it shares with `--set`."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML
from typer.testing import CliRunner

from rlc.cli import app
from rlc.cmdline import split_command_line
from rlc.convert import from_overrides, to_cli
from rlc.overrides import OverrideError, format_value, parse_override

EXAMPLES = Path(__file__).parents[2] / "examples"


def convert(*args: str, stdin: str | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["convert", *args], input=stdin)
    return result.exit_code, result.stdout, result.stderr


def seed_blocks() -> tuple[str, str]:
    """Seed 003's old command line and its new YAML, both kept verbatim in examples/."""
    return ((EXAMPLES / "legacy" / "verl_grpo_gsm8k.sh").read_text(),
            (EXAMPLES / "yaml" / "grpo_gsm8k.yaml").read_text())


def test_seed_003_command_converts_to_its_yaml() -> None:
    command, expected = seed_blocks()
    code, out, _ = convert("--from-cli", command)
    assert code == 0
    yaml = YAML(typ="safe")
    assert yaml.load(out) == yaml.load(expected)
    assert len(split_command_line(command).overrides) == 30


@pytest.mark.parametrize(("text", "op", "path", "value"), [
    ("a.b=1", "set", ("a", "b"), 1),
    ("+a.b='x = y'", "add", ("a", "b"), "x = y"),
    ("++a=[1,'b,c',[]]", "force", ("a",), [1, "b,c", []]),
    ("~a.b", "delete", ("a", "b"), None),
    ("a={x: 1, y: [true, null]}", "set", ("a",), {"x": 1, "y": [True, None]}),
    ("a=1e-6", "set", ("a",), 1e-6),
    ("a=-1", "set", ("a",), -1),
    ("a=False", "set", ("a",), False),
    ("a=$HOME/x", "set", ("a",), "${oc.env:HOME}/x"),
    ("a=${trainer.project_name}", "set", ("a",), "${trainer.project_name}"),
])
def test_grammar(text: str, op: str, path: tuple[str, ...], value: object) -> None:
    override = parse_override(text)
    assert (override.op, override.path, override.value) == (op, path, value)


def test_shell_variables_expand_on_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATA", "/data")
    assert parse_override("a=$DATA/train.parquet", expand_env=True).value == "/data/train.parquet"
    monkeypatch.delenv("DATA")
    with pytest.raises(OverrideError, match="DATA is not set"):
        parse_override("a=${DATA}", expand_env=True)


@pytest.mark.parametrize(("text", "words"), [
    ("a.b=\"unbalanced", "unbalanced quote"),
    ("a.b.=1", "empty key segment"),
    ("=x", "the key is empty"),
    ("a.b", "expected `key=value`"),
    ("a=[1,2", "missing `]`"),
])
def test_bad_overrides_name_themselves(text: str, words: str) -> None:
    with pytest.raises(OverrideError) as info:
        parse_override(text)
    assert words in str(info.value) and f"`{text}`" in str(info.value)


@pytest.mark.parametrize(("override", "words"), [
    ("trainer.total_epochs=[1,2]", "a list cannot go into this field"),
    ("actor_rollout_ref.actor=5", "is a section, not a value"),
    ("trainer.total_epochs.x=1", "is a value, not a section"),
    ("data.max_promt_length=5", "did you mean `max_prompt_length`"),
])
def test_bad_conversions_exit_1_naming_the_override(override: str, words: str) -> None:
    code, out, err = convert("--from-cli", f"python3 -m verl.trainer.main_ppo {override}")
    assert code == 1 and words in err and override.split("=")[0] in err
    assert "Traceback" not in err


def test_values_are_typed_by_the_schema() -> None:
    tree = from_overrides(["trainer.experiment_name=2024", "data.train_batch_size=2024", "actor_rollout_ref.actor."
                           "optim.lr=1e-6", "trainer.project_name=true", "actor_rollout_ref.model.path=1e-6"])
    assert tree["trainer"]["experiment_name"] == "2024" and tree["trainer"]["project_name"] == "true"
    assert tree["data"]["train_batch_size"] == 2024 and tree["actor_rollout_ref"]["actor"]["optim"]["lr"] == 1e-6
    assert tree["actor_rollout_ref"]["model"]["path"] == "1e-6"


def test_whole_scripts_and_prefixes() -> None:
    script = """#!/bin/bash
set -x
export VLLM_ATTENTION_BACKEND=XFORMERS
CUDA_VISIBLE_DEVICES=0,1 torchrun --nproc_per_node=2 -m verl.trainer.main_ppo \\
    data.train_batch_size=16 trainer.experiment_name="my run" \\
    trainer.logger=['console','wandb'] # trailing comment
    "$@"
"""
    command = split_command_line(script)
    assert command.overrides == ["data.train_batch_size=16", "trainer.experiment_name=my run",
                                 "trainer.logger=[console,wandb]"]
    assert command.env == {"VLLM_ATTENTION_BACKEND": "XFORMERS", "CUDA_VISIBLE_DEVICES": "0,1"}
    ray = split_command_line("ray job submit --address=http://x:8265 -- python3 -m verl.trainer.main_ppo a.b=1")
    assert ray.overrides == ["a.b=1"] and ray.program.startswith("ray job submit")


def test_renamed_keys_move_with_a_note() -> None:
    code, out, err = convert("--from-cli", "trainer.val_generations_to_log_to_wandb=3")
    assert code == 0 and "log_val_generations: 3" in out and "is now `trainer.log_val_generations`" in err


def test_into_keeps_comments_and_order(tmp_path: Path) -> None:
    base = tmp_path / "base.yaml"
    base.write_text("# my experiment\ntrainer:\n  total_epochs: 2  # short\n  project_name: p\ndata:\n"
                    "  train_files: x.parquet\n")
    code, out, err = convert("--from-cli", "trainer.total_epochs=5 ++data.val_files=y.parquet ~trainer.project_name",
                             "--into", str(base))
    assert code == 0 and out == "" and f"wrote {base}" in err  # the file is edited, not printed
    assert base.read_text() == ("# my experiment\ntrainer:\n  total_epochs: 5  # short\ndata:\n"
                                "  train_files: x.parquet\n  val_files: y.parquet\n")


def test_stdin_and_output_file(tmp_path: Path) -> None:
    code, _, _ = convert("--from-cli", "-", "-o", str(tmp_path / "out.yaml"), stdin="trainer.nnodes=2\n")
    assert code == 0 and (tmp_path / "out.yaml").read_text() == "trainer:\n  nnodes: 2\n"


SCALARS = (st.none() | st.booleans() | st.integers(-10**12, 10**12)
           | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12))
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.from_regex(r"[a-z_][a-z0-9_]{0,5}", fullmatch=True), inner, max_size=3),
                      max_leaves=8)


@settings(max_examples=250, deadline=None)
@given(VALUES)
def test_values_round_trip_through_text(value: object) -> None:
    parsed = parse_override("k=" + format_value(value)).value
    assert parsed == value or (isinstance(value, float) and math.isclose(parsed, value))


@settings(max_examples=40, deadline=None)
@given(st.fixed_dictionaries({}, optional={
    "trainer": st.fixed_dictionaries({}, optional={"experiment_name": st.text(min_size=1, max_size=10),
                                                   "total_epochs": st.integers(1, 100),
                                                   "logger": st.lists(st.sampled_from(["console", "jsonl"]))}),
    "actor_rollout_ref": st.fixed_dictionaries({"model": st.fixed_dictionaries(
        {"path": st.text(min_size=1, max_size=10)}, optional={"override_config": st.dictionaries(
            st.from_regex(r"[a-z]{1,5}", fullmatch=True), SCALARS, min_size=1, max_size=2)})}),
    "algorithm": st.fixed_dictionaries({}, optional={"gamma": st.floats(0, 1), "adv_estimator": st.just("grpo")}),
}))
def test_yaml_to_cli_to_yaml_is_the_identity(config: dict) -> None:
    cli = to_cli(config)
    assert from_overrides(split_command_line(cli).overrides) == config


GSM8K_SCRIPT = r"""#!/usr/bin/env bash
set -xeuo pipefail
N_GPUS=${N_GPUS:-8}
DATA_HOME=${DATA_HOME:-"${HOME}/data"}
MODEL=${MODEL:-Qwen/Qwen2.5-0.5B-Instruct}
rollout_n=4
mini_batch=$((N_GPUS * 2))
python3 -m verl.trainer.main_ppo \
    algorithm.adv_estimator=grpo \
    data.train_files="$DATA_HOME/gsm8k/train.parquet" data.val_files="$DATA_HOME/gsm8k/test.parquet" \
    data.train_batch_size=32 \
    actor_rollout_ref.model.path=$MODEL \
    actor_rollout_ref.actor.ppo_mini_batch_size=16 \
    actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2 \
    actor_rollout_ref.rollout.n=$rollout_n \
    trainer.n_gpus_per_node=$N_GPUS trainer.nnodes=1 $@
"""


def test_an_environment_default_is_typed_by_the_schema(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`${N_GPUS:-8}` in an integer field validates as the integer 8, and the environment's value wins at launch."""
    from rlc.loader import load_config

    script = tmp_path / "run.sh"
    script.write_text(GSM8K_SCRIPT.replace("mini_batch=$((N_GPUS * 2))\n", ""))
    code, _, err = convert("--from-file", str(script), "-o", str(tmp_path / "c.yaml"))
    assert code == 0, err
    assert "n_gpus_per_node: ${oc.env:N_GPUS,8}" in (tmp_path / "c.yaml").read_text()
    for name in ("N_GPUS", "DATA_HOME", "MODEL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", "/home/u")
    first = load_config(tmp_path / "c.yaml").config
    assert first.trainer.n_gpus_per_node == 8 and first.data.train_files == "/home/u/data/gsm8k/train.parquet"
    monkeypatch.setenv("N_GPUS", "2")
    monkeypatch.setenv("DATA_HOME", "/d")
    second = load_config(tmp_path / "c.yaml").config
    assert second.trainer.n_gpus_per_node == 2 and second.data.train_files == "/d/gsm8k/train.parquet"


def test_a_script_that_reads_what_the_cluster_sets_converts_and_validates_with_warnings(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A verl script run under SLURM reads variables it never sets (bash passes "" where they are unset) and names an
    engine rlc substitutes: both convert, and validation warns about each instead of failing."""
    script = tmp_path / "run.sh"
    script.write_text(GSM8K_SCRIPT.replace("mini_batch=$((N_GPUS * 2))\n", "").replace("set -xeuo", "set -xeo")
                      .replace("trainer.nnodes=1", "trainer.nnodes=$SLURM_JOB_NUM_NODES")
                      .replace("    actor_rollout_ref.rollout.n=$rollout_n \\\n",
                               "    actor_rollout_ref.rollout.n=$rollout_n actor_rollout_ref.rollout.name=sglang \\\n"
                               "    trainer.default_local_dir=${CKPT_ROOT}/grpo \\\n"))
    out = tmp_path / "c.yaml"
    code, _, err = convert("--from-file", str(script), "-o", str(out))
    assert code == 0, err
    text = out.read_text()
    assert "nnodes: ${oc.env:SLURM_JOB_NUM_NODES}" in text and "default_local_dir: ${oc.env:CKPT_ROOT}/grpo" in text
    for name in ("SLURM_JOB_NUM_NODES", "CKPT_ROOT"):
        monkeypatch.delenv(name, raising=False)
    checked = CliRunner().invoke(app, ["validate", "--format", "json", str(out)])
    assert checked.exit_code == 0, checked.output
    found = {(d["path"], d["severity"], d["message"].split(";")[0]) for d in json.loads(checked.stdout)}
    assert found == {
        ("trainer.nnodes", "warning", "environment variable SLURM_JOB_NUM_NODES is not set here"),
        ("trainer.default_local_dir", "warning", "environment variable CKPT_ROOT is not set here"),
        ("actor_rollout_ref.rollout.name", "warning", "name 'sglang' is known to verl"),
    }


def test_arithmetic_over_the_environment_is_refused_with_its_line(tmp_path: Path) -> None:
    script = tmp_path / "run.sh"
    script.write_text(GSM8K_SCRIPT.replace("ppo_mini_batch_size=16", "ppo_mini_batch_size=$mini_batch"))
    code, _, err = convert("--from-file", str(script))
    assert code == 1
    assert "line 7: `$((N_GPUS * 2))` needs `N_GPUS` from the environment at run time" in err


def test_the_converted_values_are_what_bash_passes_to_python(tmp_path: Path) -> None:
    """bench/verl_compat.py's check: the script runs under bash with a stub `python3` that records its argv."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("verl_compat", Path(__file__).parents[2] / "bench" / "verl_compat.py")
    assert spec and spec.loader
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    script, out, work = tmp_path / "run.sh", tmp_path / "c.yaml", tmp_path / "work"
    script.write_text(GSM8K_SCRIPT.replace("mini_batch=$((N_GPUS * 2))\n", "").replace("=$rollout_n", "=$((2 * 2))"))
    work.mkdir()
    env = bench.make_sandbox(work)
    assert convert("--from-file", str(script), "-o", str(out))[0] == 0
    argv = bench.bash_argv(script, env, tmp_path)
    assert "actor_rollout_ref.rollout.n=4" in argv and f"data.train_files={work}/home/data/gsm8k/train.parquet" in argv
    assert bench.compare(script, "run.sh", out, env, tmp_path) == []
    out.write_text(out.read_text().replace("n: 4", "n: 5"))  # the check can fail
    assert bench.compare(script, "run.sh", out, env, tmp_path) == [
        "run.sh: actor_rollout_ref.rollout.n: bash passes 4, the YAML has 5",
        "run.sh: actor_rollout_ref.rollout.n: bash passes 4, the YAML has 5 (with DATA_HOME, MODEL, N_GPUS set)"]
    out.write_text(out.read_text().replace("n: 5", "n: 4").replace("oc.env:MODEL", "oc.env:MODEL_PATH"))
    assert bench.compare(script, "run.sh", out, env, tmp_path) == [  # a reference to the wrong variable
        "run.sh: actor_rollout_ref.model.path: bash passes 'Qwen/Qwen2.5-0.5B-Instruct', the YAML has "
        "'/from-env/MODEL_PATH' (with DATA_HOME, MODEL_PATH, N_GPUS set)"]


def test_a_hydra_config_of_the_users_own_is_the_base(tmp_path: Path) -> None:
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "my_grpo.yaml").write_text(
        "hydra:\n  searchpath: [pkg://verl/trainer/config]\ndefaults:\n  - ppo_megatron_trainer\n  - _self_\n"
        "data:\n  max_prompt_length: 512\n")
    script = tmp_path / "run.sh"
    script.write_text(f'CONFIG_PATH="{tmp_path}/config"\npython3 -m verl.trainer.main_ppo --config-path="$CONFIG_PATH" '
                      "--config-name='my_grpo' data.train_batch_size=8\n")
    code, out, err = convert("--from-file", str(script))
    assert code == 0, err
    assert YAML(typ="safe").load(out) == {"backend": "megatron",
                                          "data": {"max_prompt_length": 512, "train_batch_size": 8}}
    (tmp_path / "into.yaml").write_text("data:\n  train_batch_size: 4\n")
    code, _, err = convert("--from-file", str(script), "--into", str(tmp_path / "into.yaml"))
    assert code == 1 and "--into would take a second base: convert without --into" in err
    script.write_text("python3 -m verl.trainer.main_ppo --config-path=config --config-name=other a.b=1\n")
    code, _, err = convert("--from-file", str(script))
    assert code == 1 and "`--config-name=other` composes the run from a config of your own" in err


@pytest.mark.parametrize(("line", "launch"), [
    ("verl train-ppo --config_path examples/grpo.yaml --backend megatron trainer.nnodes=2",
     "rlc launch examples/grpo.yaml --backend megatron --set trainer.nnodes=2"),
    ("verl train-ppo 'my config.yaml'", "rlc launch 'my config.yaml'"),
])
def test_ii_verl_command_converts_to_rlc_launch(line: str, launch: str) -> None:
    code, out, err = convert("--from-cli", line)
    assert code == 0, err
    assert out == launch + "\n"


def test_exported_variables_are_named_not_written(tmp_path: Path) -> None:
    """The environment is not config: its names are noted, and a secret's value appears nowhere."""
    script = tmp_path / "run.sh"
    script.write_text("export WANDB_API_KEY=sk-secret-123\nVLLM_USE_V1=1 python3 -m verl.trainer.main_ppo a.b=1\n")
    code, out, err = convert("--from-file", str(script), "--allow-unknown")
    assert code == 0
    assert ("note: the script sets the environment variables VLLM_USE_V1, WANDB_API_KEY for verl; a config does not "
            "hold the environment: set them where you run `rlc launch`") in err
    assert "sk-secret" not in out + err


# An II-VERL style config: a key verl reads one level down, comments everywhere, a blank line before a section.
MISPLACED = """\
# reward-server run
actor_rollout_ref:
  actor:
    optim:
      lr: 1.0e-06  # small
  ref:
    log_prob_micro_batch_size_per_gpu: 2  # per GPU
    param_offload: true  # the reference fits on CPU

  rollout:
    name: vllm
    tokenizer_mode: null
# Enable remote reward server
reward_api:
  enable: true
trainer:
  lr_warmup_steps: 3
"""


def test_fix_moves_misplaced_keys_and_keeps_comments(tmp_path: Path) -> None:
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(MISPLACED)
    code, out, err = convert("--fix", str(cfg))
    assert code == 0 and out == ""
    assert (f"{cfg}:8: moved `actor_rollout_ref.ref.param_offload` -> "
            "`actor_rollout_ref.ref.fsdp_config.param_offload`") in err
    assert "left `trainer.lr_warmup_steps`: it fits several places" in err  # two optimizers have one: no guess
    expected = MISPLACED.replace("    param_offload: true  # the reference fits on CPU\n",
                                 "    fsdp_config:\n      param_offload: true # the reference fits on CPU\n")
    assert cfg.read_text() == expected
    code, _, err = convert("--fix", str(cfg))
    assert code == 0 and "nothing to move" in err


def test_fix_never_overwrites_a_value_already_there(tmp_path: Path) -> None:
    cfg = tmp_path / "cfg.yaml"
    text = "actor_rollout_ref:\n  ref:\n    param_offload: true\n    fsdp_config:\n      param_offload: false\n"
    cfg.write_text(text)
    code, _, err = convert("--fix", str(cfg))
    assert code == 0 and "is already set" in err and cfg.read_text() == text


def test_fix_leaves_keys_that_come_from_a_merge_key(tmp_path: Path) -> None:
    cfg = tmp_path / "cfg.yaml"
    text = "offload: &off\n  param_offload: true\nactor_rollout_ref:\n  ref:\n    <<: *off\n"
    cfg.write_text(text)
    code, _, err = convert("--fix", str(cfg))
    assert code == 0 and "it comes from a merge key" in err and cfg.read_text() == text
