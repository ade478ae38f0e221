"""Defaults lists compose as Hydra composes them: Hydra's own `compose` is the reference."""

from pathlib import Path

import pytest

from rlc.compose import compose
from rlc.diagnostics import CompileError
from rlc.source import load_file

# A config tree in the shape of verl's trainer/config: groups that include groups relatively, plain config
# entries, explicit packages, `_self_` in and out of the list, a `null` option and an `optional` entry.
FILES = {
    "trainer.yaml": """\
defaults:
  - actor@actor_rollout_ref.actor: dp_actor
  - reward_manager@reward_manager
  - reward_manager@reward_manager.extra: empty
  - rollout@actor_rollout_ref.rollout: rollout
  - optional extra@trainer.extra: absent
  - critic@critic: null
  - _self_
actor_rollout_ref:
  actor:
    ppo_mini_batch_size: 8
  rollout:
    n: 4
trainer:
  total_epochs: 2
""",
    "actor/actor.yaml": """\
ppo_mini_batch_size: 256
clip_ratio: 0.2
optim:
  lr: 1.0e-6
checkpoint:
  save_contents: [model, optimizer]
  load_contents: ${.save_contents}
""",
    "actor/dp_actor.yaml": """\
defaults:
  - ../optim@optim: fsdp
  - ../engine@fsdp_config: fsdp
  - actor
  - _self_
strategy: fsdp
optim:
  weight_decay: 0.01
""",
    "optim/fsdp.yaml": "lr: 3.0e-6\nbetas: [0.9, 0.999]\nweight_decay: 0.0\n",
    "engine/fsdp.yaml": "param_offload: false\nwrap_policy:\n  min_num_params: 0\n",
    "reward_manager.yaml": "name: naive\n",
    "rollout/rollout.yaml": "name: ???\nn: 1\ntemperature: 1.0\n",
    "critic/dp_critic.yaml": "ppo_epochs: 1\n",
    "reward_manager/empty.yaml": "# nothing here yet\n",
}


def _write(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    return tmp_path


def _hydra(config_dir: Path, name: str, overrides: tuple[str, ...] = ()) -> dict:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(config_dir), version_base=None):
        return OmegaConf.to_container(hydra_compose(config_name=name, overrides=list(overrides)), resolve=False)


def test_composition_equals_hydra(tmp_path: Path) -> None:
    root = _write(tmp_path, FILES)
    composed = compose(load_file(root / "trainer.yaml"))[0]
    assert composed.data == _hydra(root, "trainer")
    assert composed.data["actor_rollout_ref"]["actor"]["optim"]["lr"] == 1.0e-6  # actor.yaml after optim/fsdp


@pytest.mark.filterwarnings("ignore:In 'main'")  # Hydra warns that `_self_` is implicit: that is the case tested
def test_self_goes_last_when_not_listed(tmp_path: Path) -> None:
    files = {"main.yaml": "defaults:\n  - part@sec: a\nsec:\n  x: from-main\n", "part/a.yaml": "x: from-a\ny: 1\n"}
    root = _write(tmp_path, files)
    assert compose(load_file(root / "main.yaml"))[0].data == _hydra(root, "main") == {"sec": {"x": "from-main", "y": 1}}


def test_positions_point_into_the_file_that_wrote_the_key(tmp_path: Path) -> None:
    root = _write(tmp_path, FILES)
    composed = compose(load_file(root / "trainer.yaml"))[0]
    weight_decay = composed.positions[("actor_rollout_ref", "actor", "optim", "weight_decay")]
    assert (Path(weight_decay.file).name, weight_decay.line) == ("dp_actor.yaml", 8)
    betas = composed.positions[("actor_rollout_ref", "actor", "optim", "betas")]
    assert (Path(betas.file).parent.name, betas.line) == ("optim", 2)
    mini = composed.positions[("actor_rollout_ref", "actor", "ppo_mini_batch_size")]
    assert (Path(mini.file).name, mini.line) == ("trainer.yaml", 11)


# verl 0.9's layout: the engine is a group choice that other options name, overridden by a second primary file
# that includes the first; the engine's own file writes at the top with `# @package _global_`.
ENGINE_FILES = {
    "trainer.yaml": "defaults:\n  - model_engine: dp\n  - actor@actor_rollout_ref.actor: ${model_engine}_actor\n"
                    "  - _self_\ntrainer:\n  total_epochs: 1\n",
    "megatron_trainer.yaml": "defaults:\n  - trainer\n  - override model_engine: megatron\n  - _self_\n",
    "model_engine/dp.yaml": "# @package _global_\nmodel_engine: dp\n",
    "model_engine/megatron.yaml": "# @package _global_\nmodel_engine: megatron\n",
    "actor/dp_actor.yaml": "strategy: fsdp\nfsdp_config:\n  param_offload: false\n",
    "actor/megatron_actor.yaml": "strategy: megatron\nmegatron:\n  tensor_model_parallel_size: 1\n",
}


@pytest.mark.parametrize("name", ["trainer", "megatron_trainer"])
def test_group_choices_overrides_and_global_package_equal_hydra(tmp_path: Path, name: str) -> None:
    root = _write(tmp_path, ENGINE_FILES)
    composed = compose(load_file(root / f"{name}.yaml"))[0].data
    assert composed == _hydra(root, name)
    assert composed["model_engine"] == ("megatron" if name == "megatron_trainer" else "dp")


def test_group_choice_on_the_command_line_equals_hydra(tmp_path: Path) -> None:
    root = _write(tmp_path, ENGINE_FILES)
    composed, rest = compose(load_file(root / "trainer.yaml"), ["model_engine=megatron", "trainer.total_epochs=3"])
    assert composed.data == _hydra(root, "trainer", ("model_engine=megatron",))
    assert composed.data["actor_rollout_ref"]["actor"]["strategy"] == "megatron"
    assert rest == ["trainer.total_epochs=3"]  # applied afterwards, as an ordinary override


def test_model_engine_becomes_backend(tmp_path: Path) -> None:
    from rlc.markers import strip

    tree, found = strip({"model_engine": "megatron", "trainer": {}})
    assert tree == {"backend": "megatron", "trainer": {}} and found == []
    _, found = strip({"model_engine": "veomni"})
    assert "not one rlc runs" in found[0].message
    tree, found = strip({"actor_rollout_ref": {"actor": {"strategy": "megatron"}}})  # verl before model_engine
    assert tree["backend"] == "megatron" and found[0].severity == "note"
    tree, _ = strip({"backend": "fsdp", "actor_rollout_ref": {"actor": {"strategy": "megatron"}}})
    assert tree["backend"] == "fsdp"  # what the file says wins; the checks then report the disagreement


@pytest.mark.parametrize(("entry", "message"), [
    ("- nothing@x: here", "no config `nothing/here.yaml`"),
    ("- override nothing: here", "`override nothing` matches no group"),
    ("- actor@x: ${nothing}_actor", "names no group chosen earlier"),
    ("- actor@_global_: dp_actor", "the package `_global_` is not supported"),
    ("- ../../up@x: y", "points outside the config directory"),
    ("- main", "defaults cycle"),
])
def test_bad_defaults_are_clear_errors(tmp_path: Path, entry: str, message: str) -> None:
    root = _write(tmp_path, {**FILES, "main.yaml": f"defaults:\n  {entry}\n"})
    with pytest.raises(CompileError, match=message) as info:
        compose(load_file(root / "main.yaml"))[0]
    assert info.value.diagnostics[0].position.line == 2


def test_search_path_finds_configs_elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write(tmp_path / "lib" / "trainer" / "config", FILES)  # a checkout of the library's configs
    user = tmp_path / "mine"
    _write(user, {"run.yaml": "hydra:\n  searchpath:\n    - file://lib/trainer/config\ndefaults:\n  - trainer\n"
                              "  - _self_\ntrainer:\n  total_epochs: 9\n"})
    monkeypatch.chdir(tmp_path)  # file:// paths are relative to the working directory, as Hydra reads them
    composed = compose(load_file(user / "run.yaml"))[0].data
    expected = _hydra(user, "run")
    expected.pop("hydra", None)
    assert composed == expected and composed["trainer"]["total_epochs"] == 9 and "hydra" not in composed


def test_package_search_path_does_not_import_the_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "site" / "fakeverl"
    _write(package / "trainer" / "config", FILES)
    (package / "__init__.py").write_text("raise ImportError('importing the package is not allowed here')\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    user = _write(tmp_path / "mine", {"run.yaml": "hydra:\n  searchpath: [pkg://fakeverl.trainer.config]\n"
                                                  "defaults: [trainer, _self_]\n"})
    assert compose(load_file(user / "run.yaml"))[0].data["actor_rollout_ref"]["actor"]["strategy"] == "fsdp"
    (user / "bad.yaml").write_text("hydra:\n  searchpath: [file://no/such/dir]\ndefaults: [trainer]\n")
    with pytest.raises(CompileError, match="hydra.searchpath: cannot find `file://no/such/dir`"):
        compose(load_file(user / "bad.yaml"))[0]
