"""`rlc validate` end to end through the CLI: exit codes, positions, every problem at once."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from rlc.cli import app
from rlc.diagnostics import CompileError

EXAMPLES = sorted((Path(__file__).parents[2] / "examples" / "yaml").glob("*.yaml"))
BASE = """\
algorithm:
  adv_estimator: grpo
data:
  train_files: data/train.parquet
  train_batch_size: 16
actor_rollout_ref:
  model:
    path: Qwen/Qwen2-0.5B
  actor:
    ppo_mini_batch_size: 8
    ppo_micro_batch_size_per_gpu: 4
  rollout:
    name: hf
    n: 4
trainer:
  n_gpus_per_node: 2
"""


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


def write(tmp_path: Path, text: str) -> str:
    file = tmp_path / "cfg.yaml"
    file.write_text(text)
    return str(file)


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_examples_are_valid(example: Path) -> None:
    code, out = run("validate", str(example))
    assert code == 0, out


def test_base_is_valid(tmp_path: Path) -> None:
    assert run("validate", write(tmp_path, BASE)) == (0, "valid: 1 file(s), 0 error(s), 0 warning(s)\n")


@pytest.mark.parametrize(("edit", "line", "key", "words"), [
    (("adv_estimator: grpo", "adv_estimator: grpoo"), 2, "algorithm.adv_estimator", "allowed: "),
    (("train_batch_size: 16", "train_batch_sise: 16"), 5, "data.train_batch_sise", "did you mean `train_batch_size`"),
    (("n: 4", "n: four"), 14, "actor_rollout_ref.rollout.n", "expected an integer"),
    (("ppo_mini_batch_size: 8", "ppo_mini_batch_size: 32"), 10, "actor_rollout_ref.actor.ppo_mini_batch_size",
     "larger than data.train_batch_size"),
    (("ppo_micro_batch_size_per_gpu: 4", "ppo_micro_batch_size_per_gpu: 3"), 11,
     "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu", "not a multiple of the micro batch 3"),
    (("train_batch_size: 16", "train_batch_size: 12"), 10, "actor_rollout_ref.actor.ppo_mini_batch_size",
     "not a multiple of ppo_mini_batch_size"),
    (("n_gpus_per_node: 2", "n_gpus_per_node: 3"), 5, "data.train_batch_size", "do not split evenly over 3"),
    (("name: hf", "skip_rollout: true"), 13, "actor_rollout_ref.rollout.skip_rollout", "not implemented"),
])
def test_each_mistake_is_reported_at_its_line(tmp_path: Path, edit: tuple[str, str], line: int, key: str,
                                              words: str) -> None:
    code, out = run("validate", "--format", "json", write(tmp_path, BASE.replace(*edit)))
    assert code == 1
    problems = json.loads(out)
    assert any(p["path"] == key and p["position"]["line"] == line and words in f"{p['message']} {p['hint']}"
               for p in problems), problems


def test_every_problem_is_listed_at_once(tmp_path: Path) -> None:
    text = BASE.replace("train_batch_size: 16", "train_batch_sise: 16").replace("n: 4", "n: 4\n    colour: red")
    text += "hf_upload:\n  enabled: true\nreward_api:\n  enable: true\n"
    code, out = run("validate", "--format", "json", write(tmp_path, text))
    assert code == 1
    paths = {p["path"] for p in json.loads(out)}
    assert {"data.train_batch_sise", "actor_rollout_ref.rollout.colour", "hf_upload.repo_id",
            "reward_api.api_url"} <= paths


def test_rules_across_sections(tmp_path: Path) -> None:
    text = BASE.replace("adv_estimator: grpo", "adv_estimator: gae") + "critic:\n  enable: false\n"
    text = text.replace("    ppo_mini_batch_size: 8", "    ppo_mini_batch_size: 8\n    megatron:\n      seed: 1")
    code, out = run("validate", "--format", "json", write(tmp_path, text))
    found = {p["path"]: p["message"] for p in json.loads(out)}
    assert "needs a critic" in found["critic.enable"]
    assert "backend is fsdp" in found["actor_rollout_ref.actor.megatron"]


def test_warnings_do_not_fail(tmp_path: Path) -> None:
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    text = BASE.replace("path: Qwen/Qwen2-0.5B", f"path: {model_dir}\n    revision: main").replace("n: 4", "n: 1")
    text = text.replace("train_batch_size: 16", "train_batch_size: 16\n  image_key: pics")
    code, out = run("validate", write(tmp_path, text))
    assert code == 0, out
    assert "revision 'main' is ignored" in out
    assert "every advantage will be zero" in out
    assert "multimodal data is not implemented" in out


def test_unimplemented_switch_is_an_error(tmp_path: Path) -> None:
    code, out = run("validate", write(tmp_path, BASE + "reward:\n  reward_model:\n    enable: true\n"))
    assert code == 1
    assert "reward.reward_model.enable: set to True, but rlc reads a reward model from the top-level" in out


def test_bad_files_exit_1_without_traceback(tmp_path: Path) -> None:
    (tmp_path / "tabs.yaml").write_text("a:\n\tb: 1\n")
    proc = subprocess.run([sys.executable, "-m", "rlc.cli", "validate", str(tmp_path / "tabs.yaml"),
                           str(tmp_path / "missing.yaml")], capture_output=True, text=True)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert "tabs cannot indent YAML" in proc.stderr and "missing.yaml:1:1: error: file not found" in proc.stderr


def test_validate_imports_no_heavy_modules(tmp_path: Path) -> None:
    heavy = "('torch', 'ray', 'vllm', 'transformers')"
    code = (f"import sys; from rlc.cli import main; sys.argv = ['rlc', 'validate', {write(tmp_path, BASE)!r}]\n"
            "try: main()\nexcept SystemExit: pass\n"
            f"print(sorted(m for m in {heavy} if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.stdout.strip().endswith("[]"), proc.stdout + proc.stderr


def test_an_engine_that_is_not_installed_says_how_to_install_it(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    for module in ("vllm", "megatron.core"):  # as on a machine without them: find_spec answers None
        monkeypatch.setitem(sys.modules, module, None)
    text = BASE.replace("name: hf", "name: vllm") + "backend: megatron\n"
    code, out = run("validate", write(tmp_path, text))
    assert code == 1
    assert "backend megatron needs megatron-core, which is not installed" in out and "rlc[megatron]" in out
    assert "rollout vllm needs vLLM, which is not installed" in out and "rlc[vllm]" in out


def test_a_compiler_only_install_warns_instead(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the runtime (no torch) this machine only checks configs for others: a missing engine is a warning."""
    for module in ("vllm", "megatron.core", "torch"):
        monkeypatch.setitem(sys.modules, module, None)
    code, out = run("validate", write(tmp_path, BASE.replace("name: hf", "name: vllm") + "backend: megatron\n"))
    assert code == 0 and "warning: backend: backend megatron needs megatron-core" in out, out


def test_set_without_equals_names_the_flag(tmp_path: Path) -> None:
    code, out = run("validate", write(tmp_path, BASE), "-s", "trainer.total_epochs", "3")
    assert code == 2 and "is not key=value" in out and "file not found" not in out


def test_launch_flags_are_reported_as_flags(tmp_path: Path) -> None:
    from rlc.launch import LaunchRequest, prepare

    with pytest.raises(CompileError) as info:
        prepare(LaunchRequest(Path(write(tmp_path, BASE)), backend="fsdpp", offline=True))
    (error,) = info.value.diagnostics
    assert error.position.file == "--backend fsdpp" and error.dotted == "backend"


def test_delete_reaches_defaults_as_hydra_does(tmp_path: Path) -> None:
    from rlc.loader import load_config

    cfg = write(tmp_path, BASE)
    # not in the file: deleting the default leaves rlc's default, which is what verl's dataclass would then use
    default = load_config(cfg).config.trainer.total_epochs
    assert load_config(cfg, ["~trainer.total_epochs"]).config.trainer.total_epochs == default
    with pytest.raises(CompileError, match="rlc has no such key"):
        load_config(cfg, ["~trainer.no_such_key"])
    with pytest.raises(CompileError, match="is rlc's default"):
        load_config(cfg, ["~trainer.nnodes=7"])
    assert "n_gpus_per_node" not in load_config(cfg, ["~trainer.n_gpus_per_node"]).tree["trainer"]


def test_add_works_for_a_known_key_the_file_leaves_unset(tmp_path: Path) -> None:
    from rlc.loader import load_config

    assert load_config(write(tmp_path, BASE), ["+trainer.total_epochs=3"]).config.trainer.total_epochs == 3
    with pytest.raises(CompileError, match="already set; use `\\+\\+"):
        load_config(write(tmp_path, BASE), ["+trainer.n_gpus_per_node=4"])


@pytest.mark.parametrize(("edit", "path", "message"), [
    (("adv_estimator: grpo", "adv_estimator: grpo_passk"), "actor_rollout_ref.rollout.n", "needs rollout.n >= 2"),
    (("adv_estimator: grpo", "adv_estimator: optimal_token_baseline"),
     "actor_rollout_ref.actor.calculate_sum_pi_squared", "computes only with calculate_sum_pi_squared"),
    (("adv_estimator: grpo", "adv_estimator: tir_optimal_token_baseline\n  rollout_correction:\n"
      "    bypass_mode: true"), "algorithm.rollout_correction.bypass_mode", "which bypass_mode skips"),
    (("ppo_mini_batch_size: 8", "ppo_mini_batch_size: 8\n    policy_loss:\n      loss_mode: bypass_mode"),
     "actor_rollout_ref.actor.policy_loss.loss_mode", "only with algorithm.rollout_correction.bypass_mode"),
    (("ppo_mini_batch_size: 8", "ppo_mini_batch_size: 8\n    policy_loss:\n      loss_mode: dro"),
     "actor_rollout_ref.actor.policy_loss.dro_beta", "needs dro_beta"),
    (("adv_estimator: grpo", "adv_estimator: gdpo"), "algorithm.gdpo_reward_keys",
     "needs algorithm.gdpo_reward_keys"),
    (("adv_estimator: grpo", "adv_estimator: gdpo\n  gdpo_reward_keys: [a, b]\n  gdpo_reward_weights: [1.0]"),
     "algorithm.gdpo_reward_weights", "1 values for 2 gdpo_reward_keys"),
    (("adv_estimator: grpo", "adv_estimator: remax\n  filter_groups:\n    enable: true"),
     "algorithm.filter_groups.enable", "filter_groups with remax is not implemented"),
    (("adv_estimator: grpo", "adv_estimator: grpo\n  filter_groups:\n    enable: true"),
     "actor_rollout_ref.rollout.n", "no prompt ever qualifies"),
    (("adv_estimator: grpo", "adv_estimator: grpo\n  filter_groups:\n    enable: true"),
     "algorithm.filter_groups.metric", "needs a metric"),
    (("adv_estimator: grpo", "adv_estimator: grpo\n  rollout_correction:\n    rollout_rs: token_k9"),
     "algorithm.rollout_correction.rollout_rs", "not one of verl's"),
    (("adv_estimator: grpo", "adv_estimator: grpo\n  rollout_correction:\n    rollout_rs: token_k1\n"
      "    rollout_rs_threshold: 0.5_2"), "algorithm.rollout_correction.rollout_rs_threshold",
     "every token would be rejected"),
    (("adv_estimator: grpo", "adv_estimator: grpo\n  max_staleness: 1"), "algorithm.max_staleness",
     "needs rollout GPUs of their own"),
    (("adv_estimator: grpo", "adv_estimator: remax\n  max_staleness: 1"), "algorithm.max_staleness",
     "max_staleness > 0 with remax is not implemented"),
    (("adv_estimator: grpo", "adv_estimator: grpo\n  max_staleness: 2\n  filter_groups:\n    enable: true\n"
      "    metric: acc"), "algorithm.max_staleness", "max_staleness > 0 with filter_groups is not implemented"),
])
def test_algorithm_combinations_that_cannot_run_are_refused(tmp_path: Path, edit: tuple[str, str], path: str,
                                                           message: str) -> None:
    text = BASE.replace(*edit).replace("n: 4", "n: 1")
    code, out = run("validate", "--format", "json", write(tmp_path, text))
    assert code == 1
    found = {p["path"]: p["message"] for p in json.loads(out) if p["severity"] == "error"}
    assert message in found[path], found


def test_every_estimator_and_loss_verl_registers_validates(tmp_path: Path) -> None:
    from rlc.config.actor import LOSS_MODES
    from rlc.config.algorithm import ADV_ESTIMATORS

    settings = {"optimal_token_baseline": "\n    calculate_sum_pi_squared: true",
                "tir_optimal_token_baseline": "\n    calculate_sum_pi_squared: true"}
    for estimator in ADV_ESTIMATORS:
        text = BASE.replace("adv_estimator: grpo", f"adv_estimator: {estimator}" + (
            "\n  gdpo_reward_keys: [format, accuracy]" if estimator == "gdpo" else "")).replace(
            "ppo_mini_batch_size: 8", "ppo_mini_batch_size: 8" + settings.get(estimator, ""))
        assert run("validate", write(tmp_path, text))[0] == 0, estimator
    for mode in LOSS_MODES:
        text = BASE.replace("adv_estimator: grpo", "adv_estimator: grpo\n  rollout_correction:\n    bypass_mode: "
                            f"{str(mode == 'bypass_mode').lower()}").replace(
            "ppo_mini_batch_size: 8", f"ppo_mini_batch_size: 8\n    policy_loss:\n      loss_mode: {mode}"
                                      f"\n      dro_beta: 0.1")
        assert run("validate", write(tmp_path, text))[0] == 0, mode


def test_bypass_with_a_loss_that_ignores_rollout_correction_warns(tmp_path: Path) -> None:
    text = BASE.replace("adv_estimator: grpo", "adv_estimator: grpo\n  rollout_correction:\n    bypass_mode: true"
                        "\n    rollout_is: token").replace(
        "ppo_mini_batch_size: 8", "ppo_mini_batch_size: 8\n    policy_loss:\n      loss_mode: cispo")
    code, out = run("validate", write(tmp_path, text))
    assert code == 0 and "leaves rollout_is, rollout_rs and loss_type unused" in out


def test_remax_with_greedy_sampling_and_a_pinned_aggregation_warn(tmp_path: Path) -> None:
    text = BASE.replace("adv_estimator: grpo", "adv_estimator: remax").replace(
        "    n: 4", "    n: 4\n    do_sample: false").replace(
        "ppo_mini_batch_size: 8", "ppo_mini_batch_size: 8\n    policy_loss:\n      loss_mode: gspo")
    code, out = run("validate", write(tmp_path, text))
    assert "every sample is greedy too" in out
    assert "verl aggregates loss_mode gspo with seq-mean-token-mean" in out


def test_megatron_refuses_optimizer_overrides_it_cannot_apply(tmp_path: Path) -> None:
    text = BASE.replace("    ppo_mini_batch_size: 8", "    ppo_mini_batch_size: 8\n    optim:\n"
                        "      override_optimizer_config: {eps: 1.0e-6, foreach: false}") + "backend: megatron\n"
    code, out = run("validate", "--format", "json", write(tmp_path, text))
    found = {p["path"]: p["message"] for p in json.loads(out)}
    assert "['foreach'] are not supported by backend megatron" in \
        found["actor_rollout_ref.actor.optim.override_optimizer_config"]
    assert run("validate", write(tmp_path, text.replace(", foreach: false", "")))[0] == 0  # eps maps to adam_eps


def test_megatron_expert_parallelism_is_checked_against_the_model_and_the_gpus(tmp_path: Path) -> None:
    model = tmp_path / "moe"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({
        "architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe", "num_attention_heads": 4,
        "num_key_value_heads": 2, "num_hidden_layers": 2, "hidden_size": 64, "num_experts": 4,
        "moe_intermediate_size": 32, "num_experts_per_tok": 2, "vocab_size": 300}))
    text = BASE.replace("path: Qwen/Qwen2-0.5B", f"path: {model}").replace(
        "    ppo_micro_batch_size_per_gpu: 4", "    ppo_micro_batch_size_per_gpu: 4\n    megatron:\n"
        "      expert_model_parallel_size: EP") + "backend: megatron\n"
    code, out = run("validate", "--format", "json", write(tmp_path, text.replace("EP", "2")))
    assert code == 0, out  # 4 experts, 2 per GPU; both GPUs stay data parallel for the dense layers
    code, out = run("validate", "--format", "json", write(tmp_path, text.replace("EP", "4")))
    found = {p["path"]: p["message"] for p in json.loads(out)}
    assert code == 1
    assert "expert x expert-tensor x pipeline parallel = 4 x 1 x 1 does not divide the 2 GPUs" in \
        found["actor_rollout_ref.actor.megatron.expert_model_parallel_size"]
    config = (model / "config.json").read_text()
    (model / "config.json").write_text(config.replace('"num_experts": 4', '"num_experts": 3'))
    code, out = run("validate", "--format", "json", write(tmp_path, text.replace("EP", "2")))
    assert "expert parallel size 2 must divide num_experts (3)" in \
        {p["path"]: p["message"] for p in json.loads(out)}["actor_rollout_ref.model.path"]


def test_pushes_during_training_need_saves_and_validations(tmp_path: Path) -> None:
    text = BASE + "hf_upload:\n  enabled: true\n  repo_id: me/model\n  every_n_saves: 2\n  on_best_val: true\n"
    code, out = run("validate", "--format", "json", write(tmp_path, text))
    assert code == 0  # warnings: the run works, it only pushes less than asked
    found = {p["path"]: p["message"] for p in json.loads(out)}
    assert "trainer.save_freq saves none during training" in found["hf_upload.every_n_saves"]
    assert "none runs during training" in found["hf_upload.on_best_val"]


def test_lora_validates_on_fsdp_and_is_refused_on_megatron_and_for_the_critic(tmp_path: Path) -> None:
    text = BASE.replace("    path: Qwen/Qwen2-0.5B", "    path: Qwen/Qwen2-0.5B\n    lora_rank: 32\n"
                        "    lora_alpha: 64\n    target_modules: [q_proj, v_proj]")
    code, out = run("validate", write(tmp_path, text))
    assert code == 0 and "lora" not in out.lower(), out
    code, out = run("validate", "--format", "json", write(tmp_path, text + "backend: megatron\n"))
    found = {p["path"]: p["message"] for p in json.loads(out)}
    assert code == 1 and found["actor_rollout_ref.model.lora_rank"] == "LoRA is implemented on the fsdp backend only"
    code, out = run("validate", write(tmp_path, text + "critic:\n  model:\n    lora_rank: 8\n"))
    assert code == 1 and "LoRA is implemented for the policy only" in out, out


def test_async_and_multi_turn_rules(tmp_path: Path) -> None:
    turns_hf = BASE.replace("    name: hf\n", "    name: hf\n    multi_turn: {enable: true}\n")
    code, out = run("validate", write(tmp_path, turns_hf))
    assert code == 1 and "multi-turn rollout runs agent loops on vLLM's engine; rollout hf generates one" in out
    tools = tmp_path / "tools.yaml"
    tools.write_text("tools:\n  - class_name: rlc_runtime.tools.calculator.AddTool\n    tool_schema:\n"
                     "      type: function\n      function: {name: add, parameters: {type: object, required: [a]}}\n")
    sync_turns = BASE.replace("    name: hf\n", "    name: vllm\n    mode: sync\n    tensor_model_parallel_size: 2\n"
                              f"    multi_turn:\n      enable: true\n      tool_config_path: {tools}\n")
    code, out = run("validate", write(tmp_path, sync_turns))
    assert code == 1
    assert "multi_turn.enable needs rollout.mode async" in out
    assert "tensor_model_parallel_size" not in out  # the first rank of an engine runs its agent loops
    assert f"{tools}:5:" in out and "required must list names among the properties" in out


def test_ulysses_is_fsdp_only_and_divides_gpus_and_heads(tmp_path: Path) -> None:
    def problems(text: str) -> dict[str, str]:
        return {p["path"]: p["message"] for p in json.loads(run("validate", "--format", "json",
                                                                write(tmp_path, text))[1])}

    key = "actor_rollout_ref.actor.ulysses_sequence_parallel_size"
    sp2 = BASE.replace("    ppo_mini_batch_size: 8", f"    ppo_mini_batch_size: 8\n    {key.split('.')[-1]}: 2")
    assert run("validate", write(tmp_path, sp2))[0] == 0
    assert "fsdp backend only" in problems(sp2 + "backend: megatron\n")[key]
    assert "does not divide the 2 GPUs" in problems(sp2.replace("parallel_size: 2", "parallel_size: 3"))[key]
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "qwen2", "num_attention_heads": 3, "hidden_size": 192,
                                                   "num_hidden_layers": 2, "intermediate_size": 256,
                                                   "vocab_size": 300}))
    assert "the model's 3 attention heads" in problems(sp2.replace("Qwen/Qwen2-0.5B", str(model)))[key]


def test_megatron_passes_megatrons_optimizer_offload_overrides(tmp_path: Path) -> None:
    """verl's scripts set megatron-core's HybridDeviceOptimizer fields. The precision-aware optimizer needs
    Transformer Engine (megatron-core reads its version), which this machine lacks: validate warns that rlc runs
    megatron's standard optimizer instead (fp32 master weights and moments), with or without optimizer_cpu_offload.
    Its dtypes (exp_avg_dtype, ...) warn that they stay fp32; below fp32 without the flag, megatron would assert."""
    overrides = "{optimizer_cpu_offload: true, optimizer_offload_fraction: 1.0, overlap_cpu_optimizer_d2h_h2d: true}"
    text = BASE.replace("    ppo_mini_batch_size: 8", "    ppo_mini_batch_size: 8\n    optim:\n"
                        f"      override_optimizer_config: {overrides}") + "backend: megatron\n"
    code, out = run("validate", write(tmp_path, text))
    assert code == 0, out
    where = "actor_rollout_ref.actor.optim.override_optimizer_config.use_precision_aware_optimizer"
    text = text.replace("d2h_h2d: true}", "d2h_h2d: true, use_precision_aware_optimizer: true}")
    assert importlib.util.find_spec("transformer_engine") is None
    for cpu_offload in ("true", "false"):  # without Transformer Engine rlc runs the standard optimizer either way
        text = text.replace("optimizer_cpu_offload: true", f"optimizer_cpu_offload: {cpu_offload}")
        code, out = run("validate", "--format", "json", write(tmp_path, text))
        found = {p["path"]: p for p in json.loads(out)}
        assert code == 0 and found[where]["severity"] == "warning", out
        assert "rlc runs megatron's standard optimizer instead, with fp32 master weights and fp32 Adam moments" in \
            found[where]["message"]
    dtype = "actor_rollout_ref.actor.optim.override_optimizer_config.exp_avg_dtype"
    for aware, value, message in ((True, "bf16", "rlc keeps it fp32"),
                                  (False, "bf16", "needs use_precision_aware_optimizer: true beside it"),
                                  (True, "int3", "'int3' is not a dtype rlc knows")):
        changed = text.replace("use_precision_aware_optimizer: true}",
                               f"use_precision_aware_optimizer: {str(aware).lower()}, exp_avg_dtype: {value}}}")
        code, out = run("validate", "--format", "json", write(tmp_path, changed))
        found = {p["path"]: p for p in json.loads(out)}
        assert message in found[dtype]["message"]
        assert (code, found[dtype]["severity"]) == ((0, "warning") if message.startswith("rlc") else (1, "error"))


def test_prefix_grouper_is_accepted_with_what_rlc_computes_instead(tmp_path: Path) -> None:
    """verl's PrefixGrouper runs a group's prompt once; rlc runs each full sequence: the same log-probs, so a
    warning, not an error."""
    text = BASE.replace("    ppo_mini_batch_size: 8", "    ppo_mini_batch_size: 8\n    use_prefix_grouper: true")
    code, out = run("validate", "--format", "json", write(tmp_path, text))
    found = {p["path"]: p for p in json.loads(out)}["actor_rollout_ref.actor.use_prefix_grouper"]
    assert code == 0 and found["severity"] == "warning"
    assert "rlc computes each sample's full sequence" in found["message"]


def test_rollout_expert_parallel_is_vllms_over_tensor_times_data_parallel(tmp_path: Path) -> None:
    """verl's rule (expert_parallel_size = tensor x data parallel) is an error when broken; data parallel > 1 warns
    that rlc's engines split their experts over fewer GPUs; vLLM-CPU cannot run it, nor can the hf engine."""
    def found(tp: int, dp: int, ep: int, name: str = "vllm", device: str = "cuda") -> tuple[int, dict[str, Any]]:
        text = BASE.replace("    name: hf\n", f"    name: {name}\n    tensor_model_parallel_size: {tp}\n"
                            f"    data_parallel_size: {dp}\n    expert_parallel_size: {ep}\n")
        code, out = run("validate", "--format", "json", write(tmp_path, text + f"  device: {device}\n"))
        problems = json.loads(out) if out.strip() else []  # a clean config prints nothing
        return code, {p["path"]: p for p in problems}.get("actor_rollout_ref.rollout.expert_parallel_size")

    assert found(2, 1, 2) == (0, None)
    code, problem = found(1, 2, 4)
    assert code == 1 and problem["message"].startswith("expert_parallel_size 4 is not tensor_model_parallel_size x "
                                                       "data_parallel_size (1 x 2 = 2)")
    code, problem = found(1, 2, 2)
    assert code == 0 and problem["severity"] == "warning"
    assert "each rollout GPU holds all the experts instead of 1/2" in problem["message"]
    code, problem = found(2, 1, 2, device="cpu")
    assert code == 1 and "vLLM-CPU's fused-MoE kernels have no expert map" in problem["message"]
    code, problem = found(2, 1, 2, name="hf")
    assert code == 1 and problem["message"] == "expert_parallel_size is vLLM's; rollout hf has no expert parallelism"


def test_megatron_offload_and_dist_checkpoint_keys_are_each_roles_own(tmp_path: Path) -> None:
    """ref.megatron mirrors the actor's layout, but its offload and initial-weight keys are its own: setting them
    earns no "uses the actor's layout" warning; use_dist_checkpointing without a path is an error."""
    text = BASE.replace("    ppo_mini_batch_size: 8", "    ppo_mini_batch_size: 8\n    use_kl_loss: true\n"
                        "    megatron: {param_offload: true, grad_offload: true, optimizer_offload: true}").replace(
        "  rollout:\n", "  ref:\n    megatron: {param_offload: true}\n  rollout:\n") + "backend: megatron\n"
    code, out = run("validate", "--format", "json", write(tmp_path, text))
    assert code == 0, out
    assert "megatron" not in out  # no diagnostic about either block
    text = text.replace("{param_offload: true}", "{param_offload: true, use_dist_checkpointing: true}")
    code, out = run("validate", "--format", "json", write(tmp_path, text))
    found = {p["path"]: p["message"] for p in json.loads(out)}
    assert code == 1
    assert found["actor_rollout_ref.ref.megatron.dist_checkpointing_path"] == \
        "use_dist_checkpointing is set, but dist_checkpointing_path is not"
