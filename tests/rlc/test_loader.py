"""The loader takes verl's dumped and composed configs: markers, resolvers, `???`, and refuses control characters."""

from pathlib import Path

import pytest

from rlc.diagnostics import CompileError
from rlc.loader import load_config

# The shape of verl's `_generated_ppo_trainer.yaml`: `_target_` on sections, `oc.select` with typed defaults,
# relative references, and `???` for the rollout engine, which verl leaves for the user to choose.
DUMPED = """\
algorithm:
  _target_: verl.trainer.config.AlgoConfig
  adv_estimator: grpo
data:
  train_files: data/train.parquet
  train_batch_size: 16
  max_prompt_length: 256
actor_rollout_ref:
  model:
    path: Qwen/Qwen2-0.5B
  actor:
    _target_: verl.workers.config.FSDPActorConfig
    ppo_mini_batch_size: 8
    ppo_micro_batch_size_per_gpu: 4
    optim:
      _target_: verl.workers.config.FSDPOptimizerConfig
      lr: 1.0e-06
    checkpoint:
      _target_: verl.trainer.config.CheckpointConfig
      save_contents: [model, optimizer, extra]
      load_contents: ${.save_contents}
  rollout:
    _target_: verl.workers.config.RolloutConfig
    name: ???
    n: 4
    prompt_length: ${oc.select:data.max_prompt_length,512}
    response_length: ${oc.select:data.max_response_length,512}
trainer:
  n_gpus_per_node: 2
  experiment_name: exp
"""


def _load(tmp_path: Path, text: str, sets: tuple[str, ...] = ()):
    file = tmp_path / "cfg.yaml"
    file.write_text(text)
    return load_config(file, sets)


def test_dumped_verl_shape_validates(tmp_path: Path) -> None:
    loaded = _load(tmp_path, DUMPED)
    rollout = loaded.config.actor_rollout_ref.rollout
    assert (rollout.prompt_length, rollout.response_length) == (256, 512)
    assert loaded.config.actor_rollout_ref.actor.checkpoint.load_contents == ["model", "optimizer", "extra"]
    assert rollout.name == "vllm"
    said = {d.code: d for d in loaded.warnings}
    missing = said["missing-value"]
    assert missing.severity == "warning" and "rlc uses its default 'vllm'" in missing.message
    assert said["missing-value"].position.line == 24
    assert "this and 4 more `_target_` key(s) name verl's config classes" in said["verl-target"].message
    assert said["verl-target"].position.line == 2


def test_missing_value_set_by_override_is_quiet(tmp_path: Path) -> None:
    loaded = _load(tmp_path, DUMPED, ("actor_rollout_ref.rollout.name=hf",))
    assert loaded.config.actor_rollout_ref.rollout.name == "hf"
    assert "missing-value" not in {d.code for d in loaded.warnings}


def test_required_value_left_missing_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(CompileError) as info:
        _load(tmp_path, DUMPED.replace("path: Qwen/Qwen2-0.5B", "path: ???"))
    (error,) = [d for d in info.value.diagnostics if d.severity == "error"]
    assert error.dotted == "actor_rollout_ref.model.path" and "required and still unset" in error.message


def test_a_target_outside_verl_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CompileError, match="cannot instantiate classes") as info:
        _load(tmp_path, DUMPED.replace("verl.trainer.config.AlgoConfig", "mypkg.Algo"))
    (error,) = [d for d in info.value.diagnostics if d.severity == "error"]
    assert error.position.line == 2


@pytest.mark.parametrize("value", ['"a\\0b"', '"a\\x1bb"'])
def test_control_characters_are_refused(tmp_path: Path, value: str) -> None:
    with pytest.raises(CompileError, match="control character") as info:
        _load(tmp_path, DUMPED.replace("experiment_name: exp", f"experiment_name: {value}"))
    (error,) = [d for d in info.value.diagnostics if d.severity == "error"]
    assert error.dotted == "trainer.experiment_name"


def test_composed_defaults_list_validates(tmp_path: Path) -> None:
    (tmp_path / "rollout").mkdir()
    (tmp_path / "rollout" / "rollout.yaml").write_text("name: ???\nn: 1\ntemperature: 1.0\n")
    text = DUMPED.replace("algorithm:\n", "defaults:\n  - rollout@actor_rollout_ref.rollout: rollout\n  - _self_\n"
                          "algorithm:\n", 1).replace("    name: ???\n", "")
    loaded = _load(tmp_path, text)
    assert loaded.config.actor_rollout_ref.rollout.n == 4  # the file's own value wins over the default's
    missing = next(d for d in loaded.warnings if d.code == "missing-value")
    assert Path(missing.position.file).name == "rollout.yaml" and missing.position.line == 1
