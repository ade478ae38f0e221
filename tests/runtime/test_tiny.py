"""Tiny tokenizers and models of every family, saved and loaded the standard way; the shipped quickstart model."""

import random
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from rlc_runtime.rewards.rules import compute_score
from rlc_runtime.tiny import (
    ARCHS,
    build_model,
    build_tiny_checkpoint,
    build_tokenizer,
    noisy_answer,
    task_texts,
    warm_up,
)

SHIPPED = Path(__file__).parents[2] / "examples" / "models" / "tiny-qwen2"


def test_tokenizer() -> None:
    tokenizer = build_tokenizer(task_texts())
    assert 256 < len(tokenizer) < 400
    special = (tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id)
    assert special == (0, 1, 2)
    text = tokenizer.apply_chat_template([{"role": "system", "content": "Add."}, {"role": "user", "content": "3+4="},
                                          {"role": "assistant", "content": "7"}], tokenize=False)
    assert text == "<|bos|><|system|>Add.<|user|>3+4=<|assistant|>7<|eos|>"
    for anything in ("12+7=19", "Ünïcödé, emoji 🚀 and\ttabs"):  # byte-level: every string round-trips
        assert tokenizer.decode(tokenizer(anything, add_special_tokens=False).input_ids) == anything


@pytest.mark.parametrize("arch", ARCHS)
def test_every_family_saves_and_loads(tmp_path: Path, arch: str) -> None:
    out = build_tiny_checkpoint(tmp_path / "model", arch)
    assert (out / "model.safetensors").is_file() and [p.name for p in tmp_path.iterdir()] == ["model"]
    model = AutoModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert model.config.model_type == arch and model.config.head_dim == 64
    assert model.config.eos_token_id == tokenizer.eos_token_id == 2
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "3+4="}], add_generation_prompt=True,
                                           return_tensors="pt", return_dict=True)
    out_ids = model.generate(**prompt, max_new_tokens=3, do_sample=False)
    assert out_ids.shape[1] <= prompt["input_ids"].shape[1] + 3
    assert model(**prompt).logits.shape == (1, prompt["input_ids"].shape[1], len(tokenizer))


def test_model_options() -> None:
    model = build_model("llama", 300, num_key_value_heads=2, tie_word_embeddings=False, num_layers=1)
    assert model.config.num_key_value_heads == 2 and model.lm_head.weight is not model.model.embed_tokens.weight
    with pytest.raises(ValueError, match="unknown model family 'gpt9'"):
        build_model("gpt9")
    with pytest.raises(ValueError, match="multiple of the head dimension"):
        build_model("qwen2", hidden_size=96)


def test_warm_up_trains_on_answers_only() -> None:
    tokenizer = build_tokenizer(task_texts())
    model = build_model("qwen2", len(tokenizer))
    before = [p.detach().clone() for p in model.parameters()]
    loss = warm_up(model, tokenizer, [("3+4=", "7")], steps=2, batch_size=4)
    assert loss == loss and 0 < loss < 10  # finite, and near ln(vocab) for two answer tokens: not over the prompt
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    rng = random.Random(0)
    answers = [noisy_answer("7", 0.4, rng) for _ in range(2000)]
    assert 0.4 < answers.count("7") / 2000 < 0.48  # 0.4 right, plus guesses that happen to be right
    assert {int(a) for a in answers} == set(range(19))


def test_shipped_model_is_partly_right() -> None:
    """The quickstart's model answers in format, and right about a third of the time at temperature 1."""
    tokenizer = AutoTokenizer.from_pretrained(SHIPPED)
    model = AutoModelForCausalLM.from_pretrained(SHIPPED).eval()
    problems = [(f"{a}+{b}=", str(a + b)) for a in range(10) for b in range(10)]
    tokenizer.padding_side = "left"
    prompts = tokenizer([tokenizer.apply_chat_template([{"role": "user", "content": q}], tokenize=False,
                                                       add_generation_prompt=True) for q, _ in problems],
                        add_special_tokens=False, padding=True, return_tensors="pt")

    def accuracy(samples: int, **sampling: object) -> tuple[float, float]:
        torch.manual_seed(0)
        out = model.generate(**prompts, max_new_tokens=4, num_return_sequences=samples, **sampling)
        responses = out[:, prompts["input_ids"].shape[1]:]
        texts = tokenizer.batch_decode(responses, skip_special_tokens=True)
        right = [compute_score("arith", t, problems[i // samples][1]) for i, t in enumerate(texts)]
        return sum(right) / len(right), (responses == tokenizer.eos_token_id).any(1).float().mean().item()

    greedy, _ = accuracy(1, do_sample=False)
    sampled, stopped = accuracy(4, do_sample=True, temperature=1.0, top_p=1.0)
    assert greedy > 0.8 and 0.2 < sampled < 0.5 and stopped > 0.9
