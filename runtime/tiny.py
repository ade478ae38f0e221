"""Tiny models, tokenizers and the bundled arithmetic task, built locally (nothing is downloaded).

Tests everywhere and the CPU quickstart need a real tokenizer and a real `transformers` model of a named
family, in seconds. The tokenizer is a byte-level BPE trained with `tokenizers` on the task's text, with
bos/eos/pad tokens and a minimal jinja chat template, so `apply_chat_template` works as on any Hub model.
Models come from `AutoConfig.for_model(model_type)`, so every causal-LM family transformers knows builds the
same way; all use head_dim 64 because vLLM's CPU attention rejects smaller heads.

The task is single-digit addition ("3+4=" -> "7"). `warm_up` gives a model a short supervised pass on answers
from a sloppy teacher: right `p_correct` of the time, otherwise a guess that ignores the question. The model
learns the format, the sums, and a question-independent prior over guesses beside them; GRPO only has to turn
that one prior down, so the reward rises within a few dozen steps. (A teacher that is off by one or two, tried
first, blurs each fact separately, and GRPO barely moved it in the same budget.)
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}<|user|>{{ m['content'] }}"
    "{% elif m['role'] == 'assistant' %}<|assistant|>{{ m['content'] }}<|eos|>"
    "{% else %}<|system|>{{ m['content'] }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
SPECIAL = ["<|pad|>", "<|bos|>", "<|eos|>", "<|user|>", "<|assistant|>", "<|system|>", "<|unk|>"]
ARCHS = ("qwen2", "llama", "mistral", "gemma", "phi", "phi3", "qwen3", "gemma2")
# Qwen2's pre-tokenizer (digits one by one). transformers 5 loads a `qwen2`/`qwen3` checkpoint's tokenizer as
# `Qwen2Tokenizer`, which rebuilds its pipeline from the vocabulary with exactly this split, NFC and byte-level
# steps; built the same way, the tokenizer encodes alike whichever class loads it.
SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
         r"|\s+(?!\S)|\s+")
# A little English beside the task, so the tokenizer learns some merges and other texts in tests look ordinary.
ENGLISH = ("The user asks a question and the assistant answers it. What is the sum of these two numbers? "
           "Please reason step by step, and put your final answer within a box. The answer is right.")


def build_tokenizer(texts: Iterable[str], vocab_size: int = 300) -> Any:
    """A `PreTrainedTokenizerFast`: byte-level BPE (every string encodes), special tokens first (ids 0-6)."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.normalizer = normalizers.NFC()
    core.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    core.train_from_iterator([*texts, ENGLISH], trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<|pad|>", bos_token="<|bos|>",
                                        eos_token="<|eos|>", unk_token="<|unk|>", clean_up_tokenization_spaces=False)
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_model(arch: str = "qwen2", vocab_size: int = 300, *, hidden_size: int = 128, num_layers: int = 2,
                num_key_value_heads: int = 1, intermediate_size: int = 256, tie_word_embeddings: bool = True,
                bos_token_id: int = 1, eos_token_id: int = 2, pad_token_id: int = 0, seed: int = 0,
                **overrides: Any) -> Any:
    """A randomly initialised causal LM of family `arch` (a transformers `model_type`), head_dim 64."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    if hidden_size % 64:
        raise ValueError(f"hidden_size {hidden_size} must be a multiple of the head dimension 64")
    try:
        config = AutoConfig.for_model(
            arch, vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=intermediate_size,
            num_hidden_layers=num_layers, num_attention_heads=hidden_size // 64, head_dim=64,
            num_key_value_heads=num_key_value_heads, max_position_embeddings=256,
            tie_word_embeddings=tie_word_embeddings, bos_token_id=bos_token_id, eos_token_id=eos_token_id,
            pad_token_id=pad_token_id, **overrides)
    except ValueError as err:
        raise ValueError(f"unknown model family {arch!r}: {err}") from None
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config)


def arith_problems(seed: int, count: int) -> list[tuple[str, str]]:
    """`count` (prompt, answer) pairs like ("3+4=", "7"), operands 0-9, drawn with `random.Random(seed)`."""
    rng = random.Random(seed)
    pairs = ((rng.randint(0, 9), rng.randint(0, 9)) for _ in range(count))
    return [(f"{a}+{b}=", str(a + b)) for a, b in pairs]


def task_texts() -> list[str]:
    """Text the tokenizer is trained on: every problem of the task with its answer."""
    return [f"{a}+{b}={a + b}" for a in range(10) for b in range(10)]


def noisy_answer(answer: str, p_correct: float, rng: random.Random) -> str:
    """The right answer with probability `p_correct`, otherwise a guess: any sum of two digits, 0-18."""
    return answer if rng.random() < p_correct else str(rng.randint(0, 18))


def warm_up(model: Any, tokenizer: Any, problems: list[tuple[str, str]], steps: int, *, p_correct: float = 0.4,
            batch_size: int = 128, lr: float = 1e-3, seed: int = 0) -> float:
    """Supervised steps on the chat-formatted task, loss on the answer and EOS only; returns the last loss."""
    import torch

    rng, loss = random.Random(seed), torch.tensor(float("nan"))
    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 - step / max(steps, 1))
    model.train()
    for _ in range(steps):
        batch = [rng.choice(problems) for _ in range(batch_size)]
        prompts = [tokenizer.apply_chat_template([{"role": "user", "content": q}], tokenize=False,
                                                 add_generation_prompt=True) for q, _ in batch]
        targets = [noisy_answer(a, p_correct, rng) + tokenizer.eos_token for _, a in batch]
        input_ids, labels = _join(tokenizer, prompts, targets)
        loss = model(input_ids=input_ids, attention_mask=(input_ids != tokenizer.pad_token_id).long(),
                     labels=labels).loss
        loss.backward()
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
    model.eval()
    return loss.item()


def _join(tokenizer: Any, prompts: list[str], targets: list[str]) -> tuple[Any, Any]:
    """Right-padded prompt+target ids and labels that score only the target tokens."""
    import torch

    rows = [(tokenizer(p, add_special_tokens=False).input_ids, tokenizer(t, add_special_tokens=False).input_ids)
            for p, t in zip(prompts, targets, strict=True)]
    width = max(len(p) + len(t) for p, t in rows)
    input_ids = torch.full((len(rows), width), tokenizer.pad_token_id)
    labels = torch.full((len(rows), width), -100)
    for i, (p, t) in enumerate(rows):
        input_ids[i, : len(p) + len(t)] = torch.tensor(p + t)
        labels[i, len(p): len(p) + len(t)] = torch.tensor(t)
    return input_ids, labels


def build_tiny_checkpoint(out_dir: str | Path, arch: str = "qwen2", *, sft_steps: int = 0, seed: int = 0,
                          **model_kwargs: Any) -> Path:
    """Tokenizer + model of family `arch` saved with `save_pretrained` (safetensors) into `out_dir`.

    With `sft_steps` > 0 the model gets the warm-up on the arithmetic task first (see the module docstring).
    """
    out = Path(out_dir)
    tokenizer = build_tokenizer(task_texts())
    model = build_model(arch, len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, seed=seed,
                        **model_kwargs)
    if sft_steps > 0:
        warm_up(model, tokenizer, arith_problems(seed, 1000), sft_steps, seed=seed)
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    # Written beside the target and renamed into place: a killed build never leaves half a checkpoint.
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the checkpoint is not
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return out


def build_digit_reward_model(out_dir: str | Path, tokenizer_dir: str | Path, digit: str = "9", *, steps: int = 60,
                             seed: int = 0) -> Path:
    """A tiny reward model (`Qwen2ForSequenceClassification`, one label) trained to score ~1 for a chat whose
    assistant turn contains `digit` and ~0 otherwise, with the tokenizer (and chat template) of `tokenizer_dir`.

    Its training responses are what a policy of this task writes: numbers of one to three digits, and now and then
    a stray letter; the prompts are the task's questions."""
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = AutoConfig.for_model("qwen2", vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                                  num_hidden_layers=1, num_attention_heads=1, head_dim=64, num_key_value_heads=1,
                                  max_position_embeddings=256, num_labels=1, pad_token_id=tokenizer.pad_token_id,
                                  architectures=["Qwen2ForSequenceClassification"])
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_config(config)
    rng, problems = random.Random(seed), arith_problems(seed, 200)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    for _ in range(steps):
        responses = [_digit_response(rng) for _ in range(32)]
        texts = [tokenizer.apply_chat_template([{"role": "user", "content": rng.choice(problems)[0]},
                                                {"role": "assistant", "content": r}], tokenize=False)
                 for r in responses]
        batch = tokenizer(texts, add_special_tokens=False, padding=True, return_tensors="pt")
        target = torch.tensor([float(digit in r) for r in responses])
        loss = torch.nn.functional.mse_loss(model(**batch).logits[:, 0], target)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    out = Path(out_dir)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def _digit_response(rng: random.Random) -> str:
    text = str(rng.randint(0, 10 ** rng.randint(1, 3) - 1))
    return text + rng.choice("ab+= ") if rng.random() < 0.1 else text
