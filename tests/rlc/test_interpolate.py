"""References resolve as OmegaConf resolves them (OmegaConf itself is the reference), with honest bounds."""

import pytest
from omegaconf import OmegaConf

from rlc.interpolate import MAX_CHARS, interpolate

VERL_SHAPE = {
    "data": {"max_prompt_length": 256, "max_response_length": 1024},
    "actor_rollout_ref": {
        "model": {"path": "Qwen/Qwen2-0.5B", "use_fused_kernels": False, "qat": {"enable": True, "bits": 4}},
        "actor": {
            "ppo_max_token_len_per_gpu": 4096,
            "use_fused_kernels": "${oc.select:actor_rollout_ref.model.use_fused_kernels,false}",
            "checkpoint": {"save_contents": ["model", "optimizer"], "load_contents": "${.save_contents}"},
            "profiler": {"tool": "${oc.select:global_profiler.tool,null}", "steps": "${oc.select:nowhere,[]}"},
        },
        "ref": {
            "log_prob_max_token_len_per_gpu": "${oc.select:actor_rollout_ref.actor.ppo_max_token_len_per_gpu,16384}",
            "use_torch_compile": "${oc.select:actor_rollout_ref.actor.use_torch_compile,true}",
            "name": "${oc.select:trainer.missing,'naive'}",
            "token_len": "${..actor.ppo_max_token_len_per_gpu}",
        },
        "rollout": {
            "qat": "${oc.select:actor_rollout_ref.actor.fsdp_config.qat,${oc.select:actor_rollout_ref.model.qat,null}}",
            "override_transformer_config": "${oc.select:actor_rollout_ref.actor.megatron.otc,{}}",
            "quant": "${oc.select:nowhere,{enable: false, patterns: [lm_head, '*mlp.gate'], x: null}}",
            "prompt_length": "${oc.select:data.max_prompt_length,512}",
                    "tag": "len-${data.max_prompt_length}-${.prompt_length}"},
    },
    "trainer": {"project_name": "p", "experiment_name": "${trainer.project_name}-run"},
}


def test_verl_resolvers_match_omegaconf() -> None:
    expected = OmegaConf.to_container(OmegaConf.create(VERL_SHAPE), resolve=True)
    resolved, problems = interpolate(VERL_SHAPE)
    assert problems == []
    assert resolved == expected
    assert resolved["actor_rollout_ref"]["ref"]["use_torch_compile"] is True  # typed default, not "true"
    assert resolved["actor_rollout_ref"]["rollout"]["qat"] == {"enable": True, "bits": 4}  # a nested default


def _chain(levels: int) -> dict:
    data = {"a": "x"}
    for level in range(1, levels + 1):
        previous = "a" if level == 1 else f"l{level - 1}"
        data[f"l{level}"] = f"${{data.{previous}}}${{data.{previous}}}"
    return {"data": data}


def test_repeated_references_are_not_a_cycle() -> None:
    resolved, problems = interpolate(_chain(7))
    assert problems == []
    assert resolved["data"]["l7"] == "x" * 2**7


def test_expansion_is_bounded_and_says_so() -> None:
    levels = MAX_CHARS.bit_length() + 1
    _, problems = interpolate(_chain(levels))
    assert problems and all("expansion bound, not a reference cycle" in p.message for p in problems)


def test_a_real_cycle_is_named() -> None:
    _, problems = interpolate({"a": {"x": "${a.y}", "y": "${.z}", "z": "${a.x}"}})
    assert "reference cycle: a.x -> a.y -> a.z -> a.x" in {p.message for p in problems}


def test_missing_keys_wait_for_defaults_unless_complete() -> None:
    tree = {"trainer": {"experiment_name": "${trainer.project_name}"}}
    assert interpolate(tree, complete=False) == (tree, [])
    _, problems = interpolate(tree)
    assert "refers to a key that is not in the config" in problems[0].message


@pytest.mark.parametrize("text", ["${.}x", "${...x}"])
def test_relative_reference_above_the_top(text: str) -> None:
    _, problems = interpolate({"a": text})
    assert problems


def test_shared_sections_are_bounded_by_their_expanded_size() -> None:
    tree = {"a": {"x": list(range(100))}}
    for level in range(1, 5):  # each level holds ten references to the one before: 100 * 10**4 values
        tree[f"l{level}"] = {f"k{i}": f"${{{'a' if level == 1 else f'l{level - 1}'}}}" for i in range(10)}
    _, problems = interpolate(tree)
    assert [p.message for p in problems] == ["references expand the config to more than 200000 values (an expansion "
                                             "bound, not a reference cycle)"]
