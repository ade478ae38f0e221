"""Model loading: every tiny family through the one generic path, the critic's value head, revisions pinned on
every `from_pretrained` (against the loopback Hub), and one clear error for each way loading fails."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from rlc.config.model import ModelConfig
from rlc_runtime.models import ModelLoadError, ValueModel, load_causal_lm, load_tokenizer
from rlc_runtime.tiny import build_tiny_checkpoint

FAMILIES = ("qwen2", "llama", "mistral", "gemma", "phi", "phi3")
IDS = torch.tensor([[1, 3, 22, 16, 23, 34, 4, 40]])


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {arch: build_tiny_checkpoint(root / arch, arch) for arch in FAMILIES}


@pytest.mark.parametrize("arch", FAMILIES)
def test_every_family_loads_forwards_and_gets_a_value_head(checkpoints: dict[str, Path], arch: str) -> None:
    from transformers import AutoModelForCausalLM

    cfg = ModelConfig(path=str(checkpoints[arch]))
    model = load_causal_lm(cfg)
    assert model.config.model_type == arch
    reference = AutoModelForCausalLM.from_pretrained(checkpoints[arch])
    torch.testing.assert_close(model(input_ids=IDS).logits, reference(input_ids=IDS).logits)

    critic = load_causal_lm(cfg, for_critic=True)
    assert isinstance(critic, ValueModel)
    values = critic(input_ids=IDS, attention_mask=torch.ones_like(IDS)).logits
    assert values.shape == (1, IDS.shape[1], 1)
    values.sum().backward()
    assert critic.score.weight.grad.abs().sum() > 0
    backbone_grads = [p.grad for p in critic.model.parameters() if p.grad is not None]
    assert backbone_grads and any(g.abs().sum() > 0 for g in backbone_grads)
    # The backbone is the policy's, weight for weight, under the token-classification names verl's critic uses.
    policy_state = model.state_dict()
    for name, tensor in critic.state_dict().items():
        assert name == "score.weight" or torch.equal(tensor, policy_state[name]), name


def test_the_critic_head_is_the_same_on_every_rank_and_survives_a_save(checkpoints: dict[str, Path],
                                                                       tmp_path: Path) -> None:
    cfg = ModelConfig(path=str(checkpoints["qwen2"]))
    torch.manual_seed(1)
    first = load_causal_lm(cfg, for_critic=True)
    torch.manual_seed(2)  # another rank's RNG state
    assert torch.equal(first.score.weight, load_causal_lm(cfg, for_critic=True).score.weight)
    with torch.no_grad():
        first.score.weight.mul_(3.0)
    first.save_pretrained(tmp_path / "critic")
    again = load_causal_lm(ModelConfig(path=str(tmp_path / "critic")), for_critic=True)
    torch.testing.assert_close(again(input_ids=IDS).logits, first(input_ids=IDS).logits)


def test_override_config_and_attention_choice(checkpoints: dict[str, Path]) -> None:
    cfg = ModelConfig(path=str(checkpoints["llama"]),
                      override_config={"rms_norm_eps": 1e-3, "attn_implementation": "eager"})
    model = load_causal_lm(cfg)
    assert model.config.rms_norm_eps == 1e-3
    assert model.config._attn_implementation == "eager"


def test_tokenizer_from_its_own_path_gets_a_pad_token(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    tokenizer = load_tokenizer(ModelConfig(path=str(checkpoints["qwen2"])))
    tokenizer.pad_token = None
    tokenizer.save_pretrained(tmp_path / "tok")
    loaded = load_tokenizer(ModelConfig(path="/nowhere", tokenizer_path=str(tmp_path / "tok"),
                                        custom_chat_template="{{ messages[0]['content'] }}"))
    assert loaded.pad_token == loaded.eos_token
    assert loaded.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False) == "hi"


def test_missing_directory_and_unknown_architecture_are_one_line_each(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"cannot load the config of /no/such/model: no such directory"):
        load_causal_lm(ModelConfig(path="/no/such/model"))
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "config.json").write_text(json.dumps({"model_type": "not-a-family"}))
    with pytest.raises(ModelLoadError, match="architecture is not known to this transformers") as err:
        load_causal_lm(ModelConfig(path=str(tmp_path / "odd")))
    assert "\n" not in str(err.value) and "trust_remote_code" in str(err.value)


def test_revision_reaches_config_model_and_tokenizer(hub_server, checkpoints: dict[str, Path],  # noqa: ANN001
                                                     tmp_path: Path) -> None:
    repo = "allenai/OLMo-tiny"
    hub_server.add_repo(repo, checkpoints["qwen2"])
    other = build_tiny_checkpoint(tmp_path / "stage1", "qwen2", seed=7)
    hub_server.create_branch(repo, "stage1-step1000")
    sha = hub_server.commit(repo, other, branch="stage1-step1000")

    model = load_causal_lm(ModelConfig(path=repo, revision=sha))
    local = load_causal_lm(ModelConfig(path=str(other)))
    torch.testing.assert_close(model(input_ids=IDS).logits, local(input_ids=IDS).logits)
    assert load_tokenizer(ModelConfig(path=repo, revision=sha)).pad_token == "<|pad|>"
    downloads = [r.path for r in hub_server.requests if "/resolve/" in r.path]
    assert downloads and all(f"/resolve/{sha}/" in path for path in downloads), downloads

    with pytest.raises(ModelLoadError, match="has no revision 'no-such-branch'") as err:
        load_causal_lm(ModelConfig(path=repo, revision="no-such-branch"))
    assert "\n" not in str(err.value)
