"""Reward-model scoring: the reward model's chat template over prompt + response (hand-worked token ids), scores
that do not depend on the micro-batch size (each checked against an unpadded forward of its own), and the
clear refusal of a model that is not a classifier."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    PreTrainedTokenizerFast,
)

from rlc_runtime.models import ModelLoadError
from rlc_runtime.rewards.model import head_of, load_reward_model, reward_input_ids, score_ids
from rlc_runtime.tiny import build_tiny_checkpoint

WORDS = ["<pad>", "<s>", "</s>", "[user]", "[assistant]", "what", "is", "two", "four", "<unk>"]
TEMPLATE = "<s> {% for m in messages %}[{{ m['role'] }}] {{ m['content'] }} {% endfor %}</s>"


def word_tokenizer() -> PreTrainedTokenizerFast:
    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                        unk_token="<unk>")
    tokenizer.chat_template = TEMPLATE
    return tokenizer


def test_the_reward_models_chat_template_renders_prompt_and_response() -> None:
    messages = [{"role": "user", "content": "what is two"}]
    # "<s> [user] what is two [assistant] four </s>", word by word
    assert reward_input_ids(word_tokenizer(), messages, "four", None) == [1, 3, 5, 6, 7, 4, 8, 2]
    assert reward_input_ids(word_tokenizer(), messages, "four", 5) == [1, 3, 5, 6, 7]  # cut on the right


def tiny_classifier(head: str) -> torch.nn.Module:
    config = AutoConfig.for_model("qwen2", vocab_size=64, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                  num_attention_heads=1, head_dim=64, num_key_value_heads=1, num_labels=1,
                                  pad_token_id=0)
    torch.manual_seed(0)
    cls = AutoModelForSequenceClassification if head == "sequence" else AutoModelForTokenClassification
    return cls.from_config(config).eval()


@pytest.mark.parametrize("head", ["sequence", "token"])
def test_scores_do_not_depend_on_the_micro_batch(head: str) -> None:
    model = tiny_classifier(head)
    sequences = [[5, 9, 3, 7, 2], [4, 2], [8, 8, 8, 8, 8, 8, 8, 2], [11, 2], [6, 7, 2]]
    with torch.no_grad():  # each sequence alone, no padding: the logit of its last token
        alone = [model(input_ids=torch.tensor([s])).logits.reshape(-1)[-1].item() for s in sequences]
    for size in (1, 4, None):
        assert score_ids(model, head, sequences, 0, size, "cpu") == pytest.approx(alone, abs=1e-5)


def test_heads_are_read_from_the_architectures() -> None:
    assert head_of(["Qwen2ForSequenceClassification"]) == "sequence"
    assert head_of(["LlamaForTokenClassification"]) == "token"
    assert head_of(["Qwen2ForCausalLM"]) is None and head_of(None) is None


def test_a_causal_lm_is_refused_as_reward_model(tmp_path: Path) -> None:
    path = build_tiny_checkpoint(tmp_path / "lm", hidden_size=64, num_layers=1)
    model_cfg = SimpleNamespace(path=str(path), trust_remote_code=False, override_config={})
    with pytest.raises(ModelLoadError, match="is not a sequence- or token-classification model"):
        load_reward_model(model_cfg, torch.float32)
