"""verl's whole key space: every key known, each implemented, warned about or refused, and the table of them current.

The reference for "every key" is verl's own generated trainer configs, of verl 0.9.1 and of the commit verl's
example scripts were written for (the list in verl_keys.txt, made from them by scripts/verl_keys.py); the reference
for "implemented" is the runtime's source: an unmarked key must be read there (or by the compiler, which turns it
into what the runtime reads).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel
from typer.testing import CliRunner

from rlc import keytable, schema
from rlc.cli import app
from rlc.config import RLCConfig
from rlc.config.base import status_of
from rlc.config.checks import run_checks
from rlc.diagnostics import Diagnostic

ROOT = Path(__file__).parents[3]
VERL_KEYS = [line for line in (Path(__file__).parent / "verl_keys.txt").read_text().splitlines()
             if not line.startswith("#")]
# Keys verl's example scripts add with `+` or set from recipes, beyond the generated configs (issue 14).
SCRIPT_KEYS = ["reward_model.reward_kwargs", "reward_model.overlong_buffer.len", "algorithm.filter_groups.enable",
               "custom_reward_function.reward_kwargs", "data.gen_batch_size", "trainer.use_legacy_worker_impl",
               "actor_rollout_ref.rollout.multi_turn.format"]
MINIMAL = {"algorithm": {"adv_estimator": "grpo"}, "data": {"train_files": "x.parquet", "train_batch_size": 4},
           "trainer": {"n_gpus_per_node": 1}, "actor_rollout_ref": {
               "model": {"path": "m"}, "rollout": {"name": "hf", "n": 2},
               "actor": {"ppo_mini_batch_size": 4, "ppo_micro_batch_size_per_gpu": 1}}}
# rlc/config/ declares the models and checks them: a key named there is not thereby implemented, except in
# defaults.py, which turns legacy and mirrored keys into the ones the runtime reads. The launch templates read the
# `slurm` and `ray_cluster` keys.
READERS = [*(ROOT / "runtime").rglob("*.py"), *(p for p in (ROOT / "rlc").rglob("*.py") if p.parent.name != "config"),
           ROOT / "rlc" / "config" / "defaults.py", *(ROOT / "templates").glob("*.j2")]


def _tree(keys: list[str]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for key in keys:
        *parents, leaf = key.split(".")
        node = tree
        for part in parents:
            node = node.setdefault(part, {}) if isinstance(node.get(part), dict) or part not in node else {}
        node.setdefault(leaf, None)
    return tree


def _fields(model: type[BaseModel], prefix: str = "") -> list[tuple[str, Any, type[BaseModel] | None]]:
    found = []
    for name, field in model.model_fields.items():
        section = next((t for t in (field.annotation, *getattr(field.annotation, "__args__", ()))
                        if isinstance(t, type) and issubclass(t, BaseModel)), None)
        found.append((prefix + name, field, section))
        if section is not None:
            found += _fields(section, f"{prefix}{name}.")
    return found


def _merged(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        out[key] = _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _diagnostics(tree: dict[str, Any]) -> list[Diagnostic]:
    config = _merged(MINIMAL, tree)
    assert schema.check(config) == []
    return run_checks(RLCConfig.model_validate(config), config)


def test_verl_key_list_is_verl_sized() -> None:
    assert len(VERL_KEYS) > 600 and "actor_rollout_ref.actor.megatron.override_transformer_config.recompute_method" \
        in VERL_KEYS and not any(k.endswith("_target_") for k in VERL_KEYS)


def test_every_verl_key_is_known_to_the_schema() -> None:
    tree = _tree(VERL_KEYS + SCRIPT_KEYS)
    tree["data"]["train_files"], tree["actor_rollout_ref"]["model"]["path"] = "x.parquet", "m"
    unknown = [d.dotted for d in schema.check(tree) if d.code == "unknown-key"]
    assert unknown == []


def test_every_key_is_read_marked_or_a_section() -> None:
    text = "\n".join(p.read_text() for p in READERS)
    unread = [key for key, field, section in _fields(RLCConfig)
              if section is None and status_of(field) is None
              and not re.search(rf"[.\"']{re.escape(key.rsplit('.', 1)[-1])}\b", text)]
    assert unread == []


def test_every_key_and_section_has_a_description() -> None:
    generated = schema.generate()
    nodes = {"(root)": generated, **generated["$defs"]}
    undescribed = [f"{name}.{key}" for name, node in nodes.items() for key, prop in node.get("properties", {}).items()
                   if not prop.get("description")] + [name for name, node in nodes.items() if not node["description"]]
    assert undescribed == []
    actor = generated["$defs"]["Actor"]["properties"]
    assert actor["clip_ratio_c"]["description"].startswith("Dual-clip constant")
    assert actor["policy_loss"]["description"] == "Policy-loss choice and parameters."  # a section-valued field


def test_committed_key_table_is_current() -> None:
    committed = (ROOT / "docs" / "keys.md").read_text()
    assert committed == keytable.markdown(json.loads(schema.dump(schema.generate()))), \
        "docs/keys.md drifted: run `rlc keys -o docs/keys.md`"


def test_key_table_lists_each_status() -> None:
    rows = {r.key: r for r in keytable.rows(json.loads(schema.dump(schema.generate())))}
    assert rows["actor_rollout_ref.rollout.ignore_eos"].status == "warns"
    assert rows["actor_rollout_ref.actor.fsdp_config.param_offload"].status == "implemented"
    assert rows["actor_rollout_ref.model.lora_rank"].status == "implemented"
    assert rows["critic.model.lora_rank"].status == "refused"
    assert rows["algorithm.adv_estimator"].status == "implemented"  # every estimator verl registers
    assert rows["algorithm.kl_penalty"].status == "some values"
    assert "rlc runs: kl, k1, abs, mse" in rows["algorithm.kl_penalty"].text


def test_refused_key_is_an_error_with_its_reason() -> None:
    found = _diagnostics({"critic": {"model": {"lora_rank": 8}}})
    assert [(d.dotted, d.severity) for d in found] == [("critic.model.lora_rank", "error")]
    assert found[0].message.startswith("set to 8, but LoRA is implemented for the policy only")


def test_ignored_key_warns_with_what_rlc_does_instead() -> None:
    found = _diagnostics({"actor_rollout_ref": {"model": {"path": "m"}, "rollout": {"ignore_eos": True}}})
    assert [(d.dotted, d.severity) for d in found] == [("actor_rollout_ref.rollout.ignore_eos", "warning")]
    assert "rlc ends every response at the end-of-sequence token" in found[0].message


def test_default_values_of_marked_keys_are_silent() -> None:
    assert _diagnostics({"actor_rollout_ref": {"model": {"path": "m", "lora_rank": 0},
                                               "rollout": {"ignore_eos": False}}}) == []


@pytest.mark.parametrize(("where", "value", "implemented"), [
    (("actor_rollout_ref", "rollout", "agent", "default_agent_loop"), "react_agent", "single_turn_agent"),
])
def test_verl_value_rlc_lacks_says_not_implemented(where: tuple[str, ...], value: str, implemented: str) -> None:
    tree: dict[str, Any] = {"actor_rollout_ref": {"model": {"path": "m"}}}
    node = tree
    for part in where[:-1]:
        node = node.setdefault(part, {})
    node[where[-1]] = value
    found = [d for d in _diagnostics(tree) if d.dotted == ".".join(where)]
    assert len(found) == 1 and found[0].severity == "error"
    assert f"{where[-1]} {value!r} is known to verl, but" in found[0].message and "rlc" in found[0].message
    assert found[0].hint == f"implemented in rlc: {implemented}"


@pytest.mark.parametrize(("where", "value", "runs", "caveat"), [
    (("actor_rollout_ref", "rollout", "name"), "sglang", "vllm", "engine_kwargs.sglang) do nothing"),
    (("actor_rollout_ref", "rollout", "name"), "trtllm", "vllm", "TensorRT-LLM itself is not implemented"),
    (("trainer", "device"), "npu", "cuda", "cannot run on Ascend NPUs at all"),
    (("actor_rollout_ref", "rollout", "multi_turn", "format"), "qwen", "hermes", "'Unknown tool parser: qwen'"),
])
def test_a_substituted_name_warns_and_resolves_to_what_runs(where: tuple[str, ...], value: str, runs: str,
                                                            caveat: str) -> None:
    from rlc.config.defaults import fill_defaults

    tree: dict[str, Any] = {"actor_rollout_ref": {"model": {"path": "m"}}}
    node = tree
    for part in where[:-1]:
        node = node.setdefault(part, {})
    node[where[-1]] = value
    found = [d for d in _diagnostics(tree) if d.dotted == ".".join(where)]
    assert [d.severity for d in found] == ["warning"]
    assert f"{value!r} is known to verl; rlc runs {runs!r} instead" in found[0].message and caveat in found[0].message
    filled = fill_defaults(RLCConfig.model_validate({**tree, "data": {"train_files": "t.parquet"}})
                           ).model_dump(mode="json")
    for part in where:
        filled = filled[part]
    assert filled == runs


def test_a_key_equal_to_the_one_it_mirrors_is_silent() -> None:
    same = {"tensor_model_parallel_size": 2, "forward_only": True}  # as verl dumps the reference's block
    tree = {"backend": "megatron", "actor_rollout_ref": {
        "model": {"path": "m"}, "actor": {"megatron": {"tensor_model_parallel_size": 2}, "rollout_n": 4},
        "ref": {"megatron": same}, "rollout": {"n": 4}}}
    assert [d for d in _diagnostics(tree) if d.code == "ignored"] == []
    tree["actor_rollout_ref"]["ref"]["megatron"] = {"tensor_model_parallel_size": 4}
    found = [d for d in _diagnostics(tree) if d.code == "ignored"]
    assert [(d.dotted, d.message.split(",")[0]) for d in found] == [
        ("actor_rollout_ref.ref.megatron", "set to tensor_model_parallel_size=4")]


def test_ulysses_divides_the_data_parallel_size_as_in_verl() -> None:
    # 8 GPUs with sp 2 are 4 data-parallel ranks (verl: world_size // sp): 4 prompts x 1 sample feed them exactly,
    # one sample per rank and micro-batch; over 8 ranks the same batch would be short.
    tree = {"trainer": {"n_gpus_per_node": 8}, "actor_rollout_ref": {
        "rollout": {"n": 1}, "actor": {"ulysses_sequence_parallel_size": 2}}}
    assert [d for d in _diagnostics(tree) if d.severity == "error"] == []
    tree["actor_rollout_ref"]["actor"]["ulysses_sequence_parallel_size"] = 1
    found = [d for d in _diagnostics(tree) if d.severity == "error"]
    assert [d.dotted for d in found] == ["trainer.nnodes"]


def test_context_parallel_divides_the_data_parallel_size_as_in_verl() -> None:
    # 8 GPUs at context parallel 4 are 2 data-parallel ranks (verl: world / (tp x pp x cp)): a mini-batch of 2
    # samples gives each one; over 8 ranks it would not split. (8 samples: one slice per GPU, see the next test.)
    # The reference's equal block says nothing.
    megatron = {"context_parallel_size": 4}
    tree = {"backend": "megatron", "trainer": {"n_gpus_per_node": 8}, "data": {"train_batch_size": 8},
            "actor_rollout_ref": {"rollout": {"n": 1}, "actor": {"ppo_mini_batch_size": 2, "megatron": megatron},
                                  "ref": {"megatron": megatron}}}
    assert [d for d in _diagnostics(tree) if d.severity == "error" or d.code == "ignored"] == []
    megatron["context_parallel_size"] = 1
    assert [d.dotted for d in _diagnostics(tree) if d.severity == "error"] == [
        "actor_rollout_ref.actor.ppo_mini_batch_size"]
    megatron.update(context_parallel_size=3, tensor_model_parallel_size=2)  # 6 ranks per replica
    found = [d for d in _diagnostics(tree) if d.severity == "error"]
    assert [(d.dotted, d.message) for d in found][:1] == [
        ("actor_rollout_ref.actor.megatron.context_parallel_size",
         "tensor x pipeline x context parallel = 6 does not divide the 8 GPUs")]


def test_a_key_verl_ignores_while_its_switch_is_off_is_silent_until_it_is_on() -> None:
    # lora_alpha does nothing without lora_rank, in verl as in rlc: only the switch itself is refused.
    assert _diagnostics({"critic": {"model": {"lora_alpha": 64}}}) == []
    found = _diagnostics({"critic": {"model": {"lora_alpha": 64, "lora_rank": 8}}})
    assert [(d.dotted, d.severity) for d in found] == [("critic.model.lora_rank", "error"),
                                                       ("critic.model.lora_alpha", "warning")]


def test_show_explain_prints_the_description_and_status() -> None:
    quickstart = str(ROOT / "examples" / "yaml" / "quickstart.yaml")
    result = CliRunner().invoke(app, ["show", quickstart, "--offline", "--explain",
                                      "actor_rollout_ref.rollout.ignore_eos"])
    assert result.exit_code == 0, result.output
    assert "[warns] Keep generating past the end-of-sequence token. Instead: rlc ends every response" in result.output


@pytest.mark.parametrize("example", ["quickstart.yaml", "megatron_qwen2_7b.yaml", "reward_api.yaml"])
def test_a_config_with_every_default_spelled_out_checks_clean(example: str) -> None:
    """As the run directory holds it (defaults filled in): marked keys keep their defaults, so no warning."""
    from rlc.config.defaults import fill_defaults
    from rlc.loader import load_config

    filled = fill_defaults(load_config(ROOT / "examples" / "yaml" / example, []).config)
    tree = filled.model_dump(mode="json")
    found = [d for d in run_checks(RLCConfig.model_validate(tree), tree) if d.code in ("ignored", "not-implemented")]
    assert found == []


def test_expert_and_context_parallel_keys_are_implemented_and_dynamic_context_parallel_still_refused() -> None:
    def errors(**megatron: int | bool) -> list[str]:
        tree = {"backend": "megatron", "actor_rollout_ref": {"actor": {"megatron": megatron}}}
        return [d.dotted for d in _diagnostics(tree) if d.code == "not-implemented"]

    assert errors(expert_model_parallel_size=2, expert_tensor_parallel_size=1) == []
    assert errors(context_parallel_size=2) == []
    assert errors(dynamic_context_parallel=True) == ["actor_rollout_ref.actor.megatron.dynamic_context_parallel"]


def test_verl_0_9_1_null_legacy_sections_take_their_defaults() -> None:
    # verl 0.9.1 dumps its deprecated top-level reward sections with every key null.
    tree = {"custom_reward_function": {"path": None, "name": None},
            "reward_model": {"enable": None, "num_workers": None, "reward_manager": None},
            "sandbox_fusion": {"url": None, "max_concurrent": None, "memory_limit_mb": None}}
    assert _diagnostics(tree) == []
    config = RLCConfig.model_validate(_merged(MINIMAL, tree))
    assert (config.custom_reward_function.name, config.reward_model.enable) == ("compute_score", False)


def test_verl_0_9_1_reward_section_feeds_the_reward_function_rlc_runs() -> None:
    from rlc.config.defaults import fill_defaults

    tree = {"reward": {"custom_reward_function": {"path": "my_reward.py", "name": "score"}}}
    filled = fill_defaults(RLCConfig.model_validate(_merged(MINIMAL, tree)))
    assert (filled.custom_reward_function.path, filled.custom_reward_function.name) == ("my_reward.py", "score")


def test_interleaved_pipeline_warns_that_rlc_runs_the_plain_schedule() -> None:
    def found(vpp: int) -> list[Diagnostic]:
        tree = {"backend": "megatron", "actor_rollout_ref": {
            "model": {"path": "m"}, "actor": {"megatron": {"virtual_pipeline_model_parallel_size": vpp}}}}
        return [d for d in _diagnostics(tree) if d.dotted.endswith("virtual_pipeline_model_parallel_size")]

    assert found(1) == []  # one chunk per stage is the plain schedule
    assert [(d.severity, "plain (non-interleaved) pipeline schedule" in d.message) for d in found(2)] == [
        ("warning", True)]


@pytest.mark.parametrize(("tree", "note"), [
    ({"over_sample_rate": 0.1}, "none of its code reads it: no request is aborted"),
    ({"trace": {"backend": "mlflow"}}, "rlc sends no traces to weave or mlflow"),
    ({"server": {"timeout": 120}}, "none of its code reads them"),
])
def test_keys_verl_reads_nowhere_or_rlc_logs_otherwise_warn(tree: dict[str, Any], note: str) -> None:
    found = _diagnostics({"actor_rollout_ref": {"model": {"path": "m"}, "rollout": tree}})
    assert [d.severity for d in found] == ["warning"] and note in found[0].message
    # verl's defaults of the server block (as its sglang server-mode example config writes them) are silent
    server = {"timeout": 60, "max_attempts": 3, "retry_delay": 2, "max_connections": 1000, "max_start_wait_time": 300.0}
    assert _diagnostics({"actor_rollout_ref": {"model": {"path": "m"}, "rollout": {"server": server}}}) == []


def test_a_sampler_class_is_located_before_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def sampler(**keys: str) -> list[tuple[str, str]]:
        return [(d.dotted, d.message) for d in _diagnostics({"data": {"sampler": keys}})]

    (tmp_path / "curriculum.py").write_text("class Easy: ...\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert sampler(class_path=str(tmp_path / "curriculum.py"), class_name="Easy") == []
    assert sampler(class_path=f"file://{tmp_path}/curriculum.py", class_name="Easy") == []
    assert sampler(class_path="pkg://curriculum", class_name="Easy") == []
    assert sampler(class_path="pkg://no_such_module_x", class_name="Easy") == [
        ("data.sampler.class_path", "module 'no_such_module_x' cannot be found")]
    assert sampler(class_path=str(tmp_path / "gone.py"), class_name="Easy") == [
        ("data.sampler.class_path", f"{tmp_path / 'gone.py'}: no such file")]
    assert sampler(class_path="pkg://curriculum") == [
        ("data.sampler.class_name", "a custom sampler needs both class_path and class_name; class_name is not set")]
    # verl's example sampler, a test module of verl's (which imports verl): rlc's own runs, with a note
    verls = {"class_path": "pkg://tests.utils.dataset.test_create_rl_sampler_on_cpu",
             "class_name": "RandomCurriculumSampler"}
    [note] = _diagnostics({"data": {"sampler": verls}})
    assert note.severity == "note" and "rlc runs its own implementation of it" in note.message
    from rlc.config.defaults import fill_defaults

    filled = fill_defaults(RLCConfig.model_validate(_merged(MINIMAL, {"data": {"sampler": verls}})))
    assert (filled.data.sampler.class_path, filled.data.sampler.class_name) == (
        "pkg://rlc_runtime.samplers", "RandomCurriculumSampler")


def test_megatron_samples_must_split_over_every_gpu_not_only_the_data_parallel_ranks() -> None:
    """12 samples on 8 GPUs at tensor parallel 2: 4 data-parallel ranks take 3 each, but rlc's Megatron engine
    hands each of the 8 GPUs its own slice, so 12 would lose 4 rows; 16 splits."""
    def errors(batch: int) -> list[str]:
        tree = {"backend": "megatron", "data": {"train_batch_size": batch}, "trainer": {"n_gpus_per_node": 8},
                "actor_rollout_ref": {"rollout": {"n": 2}, "actor": {
                    "ppo_mini_batch_size": batch, "megatron": {"tensor_model_parallel_size": 2}}}}
        return [d.message for d in _diagnostics(tree) if d.dotted == "data.train_batch_size"]

    assert any("12 samples do not split evenly over the 8 training GPUs" in m for m in errors(6))
    assert errors(8) == []
