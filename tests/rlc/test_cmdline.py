"""Legacy command lines and scripts -> the overrides their verl command receives."""

from __future__ import annotations

import os
import shlex
import subprocess
import time
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from rlc.cmdline import CmdlineError, split_command_line
from rlc.overrides import format_value, parse_override

SEED_SCRIPT = (Path(__file__).parents[2] / "examples" / "legacy" / "verl_grpo_gsm8k.sh").read_text()
SEED_COMMAND = SEED_SCRIPT[SEED_SCRIPT.index("python3"):]  # seed 003's command, after the script's comments


def test_seed_003_command_splits_into_its_30_overrides() -> None:
    command = split_command_line(SEED_COMMAND)
    expected = [line.strip().rstrip("\\").strip().replace("'", "") for line in SEED_COMMAND.splitlines()[1:]]
    assert command.overrides == expected and len(expected) == 30
    assert command.program == "python3 -m verl.trainer.main_ppo" and command.env == {} and command.notes == []
    assert parse_override(command.overrides[7]).value == 1e-6


def test_script_with_exports_comments_continuations_and_arguments() -> None:
    script = """#!/bin/bash
# GRPO on two GPUs
set -x
export VLLM_ATTENTION_BACKEND=XFORMERS  # the old engine
export WANDB_MODE
WANDB_MODE=offline; export WANDB_MODE

CUDA_VISIBLE_DEVICES=0,1 HYDRA_FULL_ERROR=1 torchrun --nproc_per_node=2 -m verl.trainer.main_ppo \\
    data.train_batch_size=16 trainer.experiment_name="my run" \\
    trainer.project_name='with # hash' trainer.default_local_dir=a#b \\
    trainer.logger=['console','wandb'] "$@"  # trailing comment
"""
    command = split_command_line(script)
    assert command.overrides == ["data.train_batch_size=16", "trainer.experiment_name=my run",
                                 "trainer.project_name=with # hash", "trainer.default_local_dir=a#b",
                                 "trainer.logger=[console,wandb]"]
    assert command.env == {"VLLM_ATTENTION_BACKEND": "XFORMERS", "WANDB_MODE": "offline",
                           "CUDA_VISIBLE_DEVICES": "0,1", "HYDRA_FULL_ERROR": "1"}
    assert command.program == "torchrun --nproc_per_node=2 -m verl.trainer.main_ppo"
    assert "line 3: ignored `set -x`" in command.notes
    assert any("--nproc_per_node=2" in note for note in command.notes)
    assert any("ignored `$@`" in note for note in command.notes)


def test_verl_example_script_variables_are_substituted_as_the_shell_does() -> None:
    """verl's examples build the file lists in variables; the shell expands them, so must we."""
    script = r"""set -x
gsm8k_train_path=$HOME/data/gsm8k/train.parquet
math_train_path=$HOME/data/math/train.parquet
train_files="['$gsm8k_train_path', '$math_train_path']"
MODEL=${1:-Qwen/Qwen2-7B}
ARGS="trainer.nnodes=2 trainer.n_gpus_per_node=4"
python3 -m verl.trainer.main_ppo \
    data.train_files="$train_files" \
    actor_rollout_ref.model.path=$MODEL \
    trainer.project_name='$literal' trainer.experiment_name=\$x "trainer.val_before_train=$UNSET" \
    trainer.default_local_dir=${CKPT:-/ckpt} $ARGS
"""
    command = split_command_line(script)
    values = {parse_override(o).key: parse_override(o).value for o in command.overrides}
    assert values == {
        "data.train_files": ["${oc.env:HOME}/data/gsm8k/train.parquet", "${oc.env:HOME}/data/math/train.parquet"],
        "actor_rollout_ref.model.path": "Qwen/Qwen2-7B",
        "trainer.project_name": "$literal", "trainer.experiment_name": "$x",
        "trainer.val_before_train": "${oc.env:UNSET}", "trainer.default_local_dir": "${oc.env:CKPT,/ckpt}",
        "trainer.nnodes": 2, "trainer.n_gpus_per_node": 4,  # unquoted: the shell splits the value into words
    }
    assert any("argument $1 is not known here" in note for note in command.notes)
    quoted = split_command_line('X="a.b=1 c.d=2"\npython3 -m verl.trainer.main_ppo "$X"')
    assert quoted.overrides == ["a.b=1 c.d=2"]


@pytest.mark.parametrize(("line", "program"), [
    ("ray job submit --address=http://127.0.0.1:8265 --runtime-env=verl/trainer/runtime_env.yaml --no-wait -- "
     "python3 -m verl.trainer.main_ppo a.b=1",
     "ray job submit --address=http://127.0.0.1:8265 --runtime-env=verl/trainer/runtime_env.yaml --no-wait -- "
     "python3 -m verl.trainer.main_ppo"),
    ("torchrun --standalone --nnodes=1 --nproc_per_node=8 -m verl.trainer.main_ppo a.b=1",
     "torchrun --standalone --nnodes=1 --nproc_per_node=8 -m verl.trainer.main_ppo"),
    ("python -u -m verl.trainer.main_ppo a.b=1", "python -u -m verl.trainer.main_ppo"),
    ("python3 verl/trainer/main_ppo.py a.b=1", "python3 verl/trainer/main_ppo.py"),
    ("python3 -m recipe.mine.main_ppo a.b=1", "python3 -m recipe.mine.main_ppo"),
    ("nohup python3 -m verl.trainer.main_ppo a.b=1 > train.log 2>&1 &", "nohup python3 -m verl.trainer.main_ppo"),
    ("python3 -m verl.trainer.main_ppo a.b=1 2>&1 | tee log.txt", "python3 -m verl.trainer.main_ppo"),
    ("verl train-ppo --config_path cfg.yaml --backend megatron a.b=1", "verl train-ppo"),
])
def test_launchers_are_recognised_and_dropped(line: str, program: str) -> None:
    command = split_command_line(line)
    assert command.overrides == ["a.b=1"] and command.program == program


def test_redirections_pipes_and_options_are_noted() -> None:
    command = split_command_line("python3 -m verl.trainer.main_ppo --config-path=cfg --config-name "
                                 "ppo_megatron_trainer a.b=1 > out.log 2>&1 | tee x")
    assert command.overrides == ["a.b=1"] and command.backend == "megatron"
    assert "line 1: ignored the redirection `>out.log`" in command.notes
    assert "line 1: ignored the redirection `2>&1`" in command.notes
    assert "line 1: ignored `tee x`" in command.notes
    assert "`--config-name=ppo_megatron_trainer` is verl's megatron trainer config: backend megatron" in command.notes
    multirun = split_command_line("python3 -m verl.trainer.main_ppo --multirun a.b=1")
    assert multirun.overrides == ["a.b=1"] and any("--multirun" in note for note in multirun.notes)


def test_bare_overrides_several_per_line() -> None:
    command = split_command_line("trainer.nnodes=2 +trainer.x='a b'\n~trainer.y ++z.w=[1,2]\n")
    assert command.overrides == ["trainer.nnodes=2", "+trainer.x=a b", "~trainer.y", "++z.w=[1,2]"]
    assert command.program is None


def test_a_second_verl_command_and_stray_overrides_are_noted() -> None:
    script = """python3 -m verl.trainer.main_ppo a.b=1 \\
    # a comment line ends the command, as in bash
    c.d=2
python3 -m verl.trainer.main_ppo e.f=3
"""
    command = split_command_line(script)
    assert command.overrides == ["a.b=1"]
    assert any(note.startswith("line 3: `c.d=2` is not part of the verl command") for note in command.notes)
    assert any(note.startswith("line 4: ignored a second verl command") for note in command.notes)


def test_path_helpers_are_evaluated_and_other_commands_refused_where_verl_gets_them(tmp_path: Path) -> None:
    """`$(cd "$(dirname "$0")" && pwd)` and `date` are evaluated when converting, with a note; `$(nproc)` is
    harmless until a verl argument needs its output, and then an error naming its line."""
    folder = tmp_path / "scripts"
    folder.mkdir()
    script = """DIR=$(cd "$(dirname "$0")" && pwd)
STAMP=`date +%Y`
CORES=$(nproc)
python3 -m verl.trainer.main_ppo a.b=1 trainer.default_local_dir=$DIR/ckpt trainer.experiment_name="run_$STAMP"
"""
    command = split_command_line(script, script=str(folder / "run.sh"), cwd="/")
    year = time.strftime("%Y")  # `date` is local time
    assert command.overrides == ["a.b=1", f"trainer.default_local_dir={folder}/ckpt",
                                 f"trainer.experiment_name=run_{year}"]
    assert f'line 1: `$(cd "$(dirname "$0")" && pwd)` evaluated when converting: {folder}' in command.notes
    with pytest.raises(CmdlineError, match=r"^line 3: `\$\(nproc\)` runs a command whose output rlc does not know "
                                           r".* \(it reaches the verl argument `n=` on line 4\)$"):
        split_command_line(script.replace("a.b=1", "n=$CORES"), script=str(folder / "run.sh"))


def test_here_documents_are_skipped() -> None:
    script = """cat > reward.py <<'EOF'
python3 -m verl.trainer.main_ppo not.this=1
EOF
\tcat <<-END
\tx
\tEND
python3 -m verl.trainer.main_ppo a.b=1
"""
    command = split_command_line(script)
    assert command.overrides == ["a.b=1"]
    assert "line 1: ignored a here-document (`<<EOF`)" in command.notes


def test_windows_line_endings() -> None:
    assert split_command_line("python3 -m verl.trainer.main_ppo \\\r\n  a.b=1 \\\r\n  c=2\r\n").overrides == \
        ["a.b=1", "c=2"]


@pytest.mark.parametrize(("text", "words"), [
    ("python3 -m verl.trainer.main_ppo a.b=1 junk", "line 1: `junk` is neither a `key=value` override nor an option"),
    ("python3 -m verl.trainer.main_ppo --foo a.b=1", "line 1: `--foo` is not an option rlc knows"),
    ("python3 -m verl.trainer.main_ppo --config-name", "line 1: option `--config-name` of"),
    ("python3 -m verl.trainer.main_ppo \\\n  a.b='x y", "line 2: unbalanced quote: the ' before `x y`"),
    ('python3 -m verl.trainer.main_ppo a.b="x', 'line 1: unbalanced quote: the " before `x`'),
    ("python3 -m verl.trainer.main_ppo $(cat args.txt)", "line 1: `$(cat args.txt)` runs a command whose output rlc "
     "does not know when converting; write its value in the script (it reaches the verl command on line 1)"),
    ("python3 -m verl.trainer.main_ppo a.b=$(date", "command substitution `$(date` is never closed"),
    ("python3 -m verl.trainer.main_ppo a.b=1 \\ \n  c.d=2", "line 1: a `\\` followed by a space"),
    ("cat <<EOF\nx\n", "line 3: the here-document `<<EOF` never ends"),
    ("python3 -m verl.trainer.main_ppo a.b=" + "${X:-" * 3000 + "}" * 3000, "line 1: brackets nested more than 100"),
    ("python3 -m verl.trainer.main_ppo a.b=" + '"$(echo ' * 2000 + ')"' * 2000, "brackets nested more than 100"),
    ("echo hello\nset -x", "found no verl command"),
    ("", "found no verl command"),
])
def test_errors_name_what_is_wrong(text: str, words: str) -> None:
    with pytest.raises(CmdlineError) as info:
        split_command_line(text)
    assert words in str(info.value)


def test_errors_list_the_ignored_lines() -> None:
    with pytest.raises(CmdlineError, match=r"ignored: line 1: ignored `echo hello`; line 2: ignored `set -x`"):
        split_command_line("echo hello\nset -x")


VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
                      lambda inner: st.lists(inner, max_size=3), max_leaves=6)


@settings(max_examples=100, deadline=None)
@given(st.lists(VALUES, min_size=1, max_size=4))
def test_quoted_overrides_survive_the_shell(values: list[object]) -> None:
    """What `rlc convert --to-cli` prints (shell-quoted override texts) reads back to the same values."""
    texts = [f"k{i}={format_value(v)}" for i, v in enumerate(values)]
    command = split_command_line("python3 -m verl.trainer.main_ppo " + " \\\n  ".join(map(shlex.quote, texts)))
    assert [parse_override(t).value for t in command.overrides] == values


# bash itself is the reference for what the verl command receives: a `python3` shell function prints its arguments.
PRINT_ARGUMENTS = 'python3() { shift 2; printf "%s\\0" "$@"; }\n'


def bash_arguments(script: str) -> list[str]:
    result = subprocess.run(["bash", "-c", PRINT_ARGUMENTS + script], capture_output=True, check=True,
                            env={"PATH": os.environ["PATH"]}, cwd="/", timeout=10)
    return result.stdout.decode().split("\0")[:-1]


def our_arguments(script: str) -> list[str]:
    """Ours, with the grammar's literal-dollar marks taken off (valid when no argument has `\\$` in it)."""
    return [word.replace("\\$", "$") for word in split_command_line(script).overrides]


def test_a_verl_example_script_reads_as_bash_reads_it() -> None:
    script = r"""set -e
gsm8k_train_path=/data/gsm8k/train.parquet
math_train_path=/data/math/train.parquet
train_files="['$gsm8k_train_path', '$math_train_path']"
ARGS="trainer.nnodes=2   trainer.n_gpus_per_node=4"
EMPTY=
python3 -m verl.trainer.main_ppo \
    data.train_files="$train_files" data.val_files=$gsm8k_train_path \
    trainer.logger='["console","wandb"]' trainer.project_name=a'b c'"d \"e\" \\ \` \$x"\ f#g \
    trainer.experiment_name='$literal'"${gsm8k_train_path}" $ARGS $EMPTY "$@" # the end
"""
    assert our_arguments(script) == bash_arguments(script)
    assert len(bash_arguments(script)) == 7


UNQUOTED = st.text("abcXYZ019._/:,=+-@%#", min_size=1, max_size=6)
SINGLE = st.text(st.characters(codec="utf-8", exclude_characters="'\0", exclude_categories=("Cs",)), max_size=6)
DOUBLE = st.text(st.characters(codec="utf-8", exclude_characters="\0", exclude_categories=("Cs",)), max_size=6)
VARIABLE_VALUE = st.text(st.characters(codec="utf-8", exclude_characters="'\0", exclude_categories=("Cs",)),
                         max_size=6)
SEGMENT = st.one_of(
    UNQUOTED,
    SINGLE.map(lambda text: f"'{text}'"),
    DOUBLE.map(lambda text: '"' + "".join("\\" + c if c in '\\"$`' else c for c in text) + '"'),
    st.sampled_from(" \\\"'$#;&|<>(){}*?[]~,").map(lambda char: "\\" + char),
    st.sampled_from(['"$V1"', '"${V2}"', '"x$V1"']),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(SEGMENT, min_size=1, max_size=4).map("".join), min_size=1, max_size=4),
       VARIABLE_VALUE, VARIABLE_VALUE)
def test_quoting_and_variables_read_as_bash_reads_them(words: list[str], v1: str, v2: str) -> None:
    script = f"V1='{v1}'\nV2='{v2}'\npython3 -m verl.trainer.main_ppo " + " \\\n  ".join(f"k{i}={w}" for i, w in
                                                                                 enumerate(words)) + "\n"
    expected = bash_arguments(script)
    assume(not any("\\$" in argument for argument in expected))  # our encoding of a literal `$` (see above)
    assert our_arguments(script) == expected


# The shell forms verl's example scripts use, each in a script written in their style; bash is the reference
# wherever the value is known when converting (the script sets everything the verl command reads).
STATIC_FORMS = {
    "defaults with nested quotes": r"""
DATA_ROOT=/data
MODEL= CKPT= ALT=""  # set but empty: `:-` takes the default, as the environment cannot change it
MODEL=${MODEL:-"${DATA_ROOT}/models/Qwen 7B"}
CKPT=${CKPT:-${DATA_ROOT}/ckpt}
ALT=${ALT:-$DATA_ROOT}
python3 -m verl.trainer.main_ppo actor_rollout_ref.model.path="$MODEL" trainer.default_local_dir=$CKPT \
    trainer.project_name=$ALT""",
    "arithmetic over literals and variables": r"""
max_prompt_length=$((1024 * 2))
max_response_length=$((1024 * 8))
sp=4
actor_len=$(((max_prompt_length + max_response_length) / sp))
python3 -m verl.trainer.main_ppo data.max_prompt_length=${max_prompt_length} \
    actor_rollout_ref.actor.ppo_max_token_len_per_gpu=$actor_len c.d=$(( -7 / 2 )) e.f=$(( -7 % 3 )) \
    g.h=$(( 3 ** 50 )) i.j=$(( (1 << 62) * 4 + (sp > 2) ))""",
    "arrays and script arguments": r"""
COMMON=(
    data.train_batch_size=16   # a comment inside the array
    "trainer.experiment_name=a b"
)
COMMON+=(trainer.nnodes=1)
python3 -m verl.trainer.main_ppo "${COMMON[@]}" trainer.n_gpus_per_node=${#COMMON[@]} x.y=${COMMON[2]} "$@" \
    ${@:2}""",
    "ANSI-C quoting, continuations, comments, exports": r"""
export SEP=$'a\tb\x41\'c'  # the tab and the quote are literal
# python3 -m verl.trainer.main_ppo not.this=1
python3 -m verl.trainer.main_ppo trainer.project_name="$SEP" \
    trainer.experiment_name=$'x\ny'""",
    "parameter operations": r"""
FILE=/data/gsm8k/train.parquet
NAME=Qwen2.5-7B-Instruct
python3 -m verl.trainer.main_ppo a.b=${FILE##*/} a.c=${FILE%.parquet} a.d=${NAME//-/_} a.e=${NAME,,} \
    a.f=${NAME:0:5} a.g=${FILE:+set} a.h=${NAME^^}""",
    "an if decided when converting": r"""
backend=megatron
if [[ $backend == "megatron" && -n "$backend" ]]; then
    TP=4
elif [ "$backend" = fsdp ]; then
    TP=2
else
    TP=1
fi
python3 -m verl.trainer.main_ppo actor_rollout_ref.actor.megatron.tensor_model_parallel_size=$TP""",
    "a function is defined, not run, except for its output": r"""
setup() {
    MODEL=/wrong
}
function here() {
    cd "$SUB" && pwd
}
MODEL=/right
SUB=/usr
python3 -m verl.trainer.main_ppo actor_rollout_ref.model.path=$MODEL trainer.default_local_dir=$(here)/ckpt""",
}


@pytest.mark.parametrize("script", STATIC_FORMS.values(), ids=STATIC_FORMS.keys())
def test_shell_forms_read_as_bash_reads_them(script: str) -> None:
    assert our_arguments(script) == [a for a in bash_arguments(script) if a]  # `"$@"` is no argument in bash


def test_path_helpers_are_evaluated_as_bash_evaluates_them(tmp_path: Path) -> None:
    (tmp_path / "examples" / "grpo").mkdir(parents=True)
    path = tmp_path / "examples" / "grpo" / "run.sh"
    path.write_text(r"""
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT=$(realpath "$SCRIPT_DIR/../..")
python3 -m verl.trainer.main_ppo a.b=$SCRIPT_DIR a.c=$ROOT a.d=$(basename $0 .sh) a.e=$(pwd)/x a.f=$PWD
""")
    bash = subprocess.run(["bash", "-c", PRINT_ARGUMENTS + f"source {path}", str(path)], capture_output=True,
                          check=True,
                          env={"PATH": os.environ["PATH"]}, cwd=tmp_path, timeout=10).stdout.decode().split("\0")
    ours = split_command_line(path.read_text(), script=str(path), cwd=str(tmp_path))
    assert ours.overrides == bash[:-1]
    assert ours.overrides[0] == f"a.b={tmp_path}/examples/grpo"
    assert any(n.startswith("line 2: `$(cd") and n.endswith(f"evaluated when converting: {tmp_path}/examples/grpo")
               for n in ours.notes)


def test_environment_variables_become_references_with_their_defaults() -> None:
    script = r"""
N=${N_GPUS:-8}
MODEL_PATH=${MODEL_PATH:-"${HOME}/models/Qwen 7B"}
DATA=${DATA:-$RAY_DATA_HOME}
python3 -m verl.trainer.main_ppo trainer.n_gpus_per_node=$N actor_rollout_ref.model.path="$MODEL_PATH" \
    data.train_files=$DATA/train.parquet trainer.default_local_dir=~/ckpt
"""
    values = {parse_override(o).key: parse_override(o).value for o in split_command_line(script).overrides}
    assert values == {"trainer.n_gpus_per_node": "${oc.env:N_GPUS,8}",
                      "actor_rollout_ref.model.path": "${oc.env:MODEL_PATH,'${oc.env:HOME}/models/Qwen 7B'}",
                      "data.train_files": "${oc.env:DATA,'${oc.env:RAY_DATA_HOME}'}/train.parquet",
                      "trainer.default_local_dir": "~/ckpt"}  # bash expands `~` after `=` only in `NAME=`


@pytest.mark.parametrize(("script", "message"), [
    ('if [ "$USE_MEGATRON" = 1 ]; then\n    TP=4\nelse\n    TP=1\nfi\npython3 -m verl.trainer.main_ppo a.tp=$TP',
     "^line 4: `TP` is set inside the `if` on line 1, decided at run time; rlc cannot tell which value verl gets: "
     r"set it outside the block \(it reaches the verl argument `a.tp=1` on line 6\)$"),
    ("for seed in 1 2 3; do\n  python3 -m verl.trainer.main_ppo a.seed=$seed\ndone",
     "^line 2: the verl command is inside the loop on line 1"),
    ("case $MODE in\n  big) BS=64 ;;\nesac\npython3 -m verl.trainer.main_ppo a.bs=$BS",
     "^line 2: `BS` is set inside the `case` on line 1"),
    ("GPUS=$(nvidia-smi -L | wc -l)\npython3 -m verl.trainer.main_ppo trainer.n_gpus_per_node=$GPUS",
     r"^line 1: `\$\(nvidia-smi -L \| wc -l\)` runs a command whose output rlc does not know"),
    ("python3 -m verl.trainer.main_ppo trainer.nnodes=$((NNODES * 2))",
     r"^line 1: `\$\(\(NNODES \* 2\)\)` needs `NNODES` from the environment at run time"),
    ("function gpus() {\n  nvidia-smi -L | wc -l\n}\npython3 -m verl.trainer.main_ppo a.n=$(gpus)",
     r"^line 4: `\$\(nvidia-smi -L \| wc -l\)` runs a command whose output rlc does not know"),
    ("f() { date; }\npython3 -m verl.trainer.main_ppo a.n=$(f)",
     r"^line 2: `\$\(f\)` calls the script's function `f` whose output rlc does not know"),
    ("python3 -m verl.trainer.main_ppo a.b=$RANDOM", r"^line 1: `\$RANDOM` is a value bash makes at run time"),
    ("python3 -m verl.trainer.main_ppo a.b=$1", r"^line 1: `\$1` is the script's argument 1"),
    ("python3 -m verl.trainer.main_ppo a.b=${X#*/}", r"^line 1: `\$\{X#\*/\}` transforms `X`, which comes from"),
])
def test_what_only_run_time_knows_is_refused_naming_the_line(script: str, message: str) -> None:
    with pytest.raises(CmdlineError, match=message):
        split_command_line(script)


def test_arithmetic_on_a_variable_assigned_later_says_what_bash_does_there() -> None:
    """verl's gspo_trainer/run_qwen3_32b_gspo_npu.sh divides by `sp_size` six lines before setting it: bash (the
    reference, run here) stops with a division by zero; rlc says that, not that the value is the environment's."""
    script = ("total=$(((512 + 1024) / sp_size))\nscaled=$((4 * later))\nsp_size=4\nlater=2\n"
              "python3 -m verl.trainer.main_ppo a.b=$total")
    env = {"PATH": os.environ["PATH"]}  # neither variable in bash's environment
    ran = subprocess.run(["bash", "-c", script.replace("python3 -m", "echo")], capture_output=True, text=True, env=env)
    assert "division by 0" in ran.stderr
    with pytest.raises(CmdlineError, match=r"^line 1: `\$\(\(\(512 \+ 1024\) / sp_size\)\)` needs `sp_size` before the "
                                           r"script assigns it \(at line 3\): bash reads it as 0 here, unless the "
                                           r"environment sets it, and divides by zero"):
        split_command_line(script)
    later = script.replace("a.b=$total", "a.b=$scaled")
    with pytest.raises(CmdlineError, match=r"^line 2: .* `later` before the script assigns it \(at line 4\): .* and "
                                           r"computes 0 with it as 0"):
        split_command_line(later)


def test_a_default_with_a_brace_of_its_own_is_refused_as_verl_would_refuse_it() -> None:
    """verl's grpo_trainer/run_qwen3_4b_grpo_vllm_1k_npu.sh sets a name ending in a stray `}` and puts it in
    `${CKPTS_DIR:-…}`'s default; Hydra (the reference) refuses the value bash passes, so rlc refuses it too."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    with pytest.raises(HydraException):
        OverridesParser.create().parse_override("trainer.default_local_dir=/data/ckpts/x}")
    script = 'name="x}"\nDIR=${DIR:-"${HOME}/ckpts/${name}"}\npython3 -m verl.trainer.main_ppo a.b=$DIR'
    with pytest.raises(CmdlineError, match=r"^line 2: the default `\$\{HOME\}/ckpts/x\}` of `\$DIR` holds a `\}` that "
                                           r"closes no reference.*Hydra refuses an unquoted `\}`"):
        split_command_line(script)


@pytest.mark.parametrize("script", [
    'A=(a.x=1 a.y=$(nvidia-smi -L | wc -l) a.z=2)\npython3 -m verl.trainer.main_ppo "${A[@]}"',
    'A=(a.x=1)\nA+=(a.y=$(nvidia-smi -L | wc -l) a.z=2)\npython3 -m verl.trainer.main_ppo "${A[@]}"',
])
def test_an_unknowable_array_element_is_named_not_the_arrays_first(script: str) -> None:
    """verl's npu scripts pass their settings as arrays (`"${ACTOR_CONFIG[@]}"`): the message names the element
    that cannot be known, as verl receives it, not the array's first element."""
    with pytest.raises(CmdlineError, match=r"\(it reaches the verl argument `a\.y=` on line \d\)$"):
        split_command_line(script)


def test_a_verl_command_in_a_branch_that_does_not_run_is_noted() -> None:
    script = ("MODE=fsdp\nif [ $MODE = megatron ]; then\n  python3 -m verl.trainer.main_ppo a.b=1\nelse\n"
              "  python3 -m verl.trainer.main_ppo a.b=2\nfi\n")
    command = split_command_line(script)
    assert command.overrides == ["a.b=2"]
    assert ("line 3: ignored the verl command `python3 -m verl.trainer.main_ppo a.b=1`: it is in a branch that does "
            "not run, or in a function's body") in command.notes


def test_unknowable_values_the_verl_command_does_not_use_are_harmless() -> None:
    script = ('NOW=$(hostname)\nif [ -d /x ]; then EXTRA=1; fi\nwhile true; do break; done\n'
              'python3 -m verl.trainer.main_ppo a.b=1')
    assert split_command_line(script).overrides == ["a.b=1"]


@pytest.mark.parametrize(("option", "backend"), [
    ("--config-name='ppo_megatron_trainer.yaml'", "megatron"), ("--config-name ppo_megatron_trainer", "megatron"),
    ("--config-name=ppo_trainer", "fsdp"), ("", None)])
def test_config_name_maps_to_the_backend(option: str, backend: str | None) -> None:
    command = split_command_line(f"python3 -m verl.trainer.main_ppo --config-path=config {option} a.b=1")
    assert command.backend == backend and command.overrides == ["a.b=1"]


@pytest.mark.parametrize(("module", "why"), [
    ("recipe.dapo.main_dapo", "is DAPO's trainer: dynamic sampling (`algorithm.filter_groups`) and the overlong "
                              "reward buffer are not implemented in rlc"),
    ("verl.trainer.main_generation", "generates responses for a dataset and does not train"),
    ("verl.trainer.fsdp_sft_trainer", "is supervised fine-tuning"),
    ("recipe.prime.main_prime", "is not verl's PPO trainer"),
])
def test_other_entry_points_are_refused_by_name(module: str, why: str) -> None:
    with pytest.raises(CmdlineError) as info:
        split_command_line(f"python3 -m {module} \\\n  a.b=1")
    assert str(info.value).startswith(f"line 1: `{module}` {why}")
