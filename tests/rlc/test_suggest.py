"""Did-you-mean looks at the whole schema: a key in the wrong section is named with its full path."""

from rlc import schema
from rlc.suggest import known_paths, relocation


def _hints(tree: dict) -> dict[str, str]:
    return {d.dotted: d.hint for d in schema.check(tree) if d.code == "unknown-key"}


def test_a_key_one_level_down_is_named_with_its_path() -> None:
    hints = _hints({"actor_rollout_ref": {"ref": {"param_offload": True}}})
    hint = hints["actor_rollout_ref.ref.param_offload"]
    assert hint.startswith("did you mean `actor_rollout_ref.ref.fsdp_config.param_offload`")


def test_a_key_in_another_section() -> None:
    hints = _hints({"data": {"total_epochs": 3}})
    assert hints["data.total_epochs"] == "did you mean `trainer.total_epochs`? (this key lives under another section)"


def test_a_typo_among_siblings_still_wins_when_the_name_exists_nowhere() -> None:
    assert _hints({"trainer": {"total_epoch": 3}})["trainer.total_epoch"] == "did you mean `total_epochs`?"


def test_relocation_is_unambiguous_or_nothing() -> None:
    assert relocation(("actor_rollout_ref", "ref", "param_offload")) == (
        "actor_rollout_ref", "ref", "fsdp_config", "param_offload")
    assert relocation(("actor_rollout_ref", "ref", "param_offload"), backend="megatron") == (
        "actor_rollout_ref", "ref", "megatron", "param_offload")
    assert relocation(("trainer", "lr_warmup_steps")) is None  # the actor's and the critic's optimizers: no guess


def test_known_paths_follow_references_and_unions() -> None:
    paths = set(known_paths())
    assert ("actor_rollout_ref", "actor", "optim", "lr") in paths
    assert ("critic", "optim", "lr") in paths
    assert ("trainer", "total_epochs") in paths
