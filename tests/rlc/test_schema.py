"""The committed JSON Schema is exactly what the models generate."""

from rlc import schema
from rlc.resources import resource_dir


def test_committed_schema_matches_models() -> None:
    committed = (resource_dir("schemas") / schema.SCHEMA_FILE).read_text()
    assert committed == schema.dump(schema.generate()), "schemas/ drifted: run `rlc schema -o schemas/rlc.schema.json`"


def test_unknown_key_gets_did_you_mean() -> None:
    found = schema.check({"data": {"train_files": "x", "max_promt_length": 3},
                          "actor_rollout_ref": {"model": {"path": "m"}}})
    assert [(d.dotted, d.hint) for d in found] == [("data.max_promt_length", "did you mean `max_prompt_length`?")]


def test_enum_lists_allowed_values() -> None:
    found = schema.check({"data": {"train_files": "x"}, "actor_rollout_ref": {"model": {"path": "m"}},
                          "backend": "deepspeed"})
    assert found[0].dotted == "backend"
    assert '"fsdp", "megatron"' in found[0].hint


def test_optional_int_says_what_was_expected() -> None:
    found = schema.check({"data": {"train_files": "x"}, "actor_rollout_ref": {
        "model": {"path": "m"}, "actor": {"ppo_micro_batch_size_per_gpu": "four"}}})
    assert found[0].message == 'expected an integer or null, got "four"'


def test_missing_required_section() -> None:
    found = schema.check({"data": {"train_files": "x"}})
    assert [d.dotted for d in found] == ["actor_rollout_ref"]
    assert found[0].message == "missing required key `actor_rollout_ref`"
