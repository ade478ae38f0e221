"""The HF-generate rollout on a tiny model: n samples per prompt, lengths, EOS and stop strings, log-probs
against a teacher-forced forward, seeding, and weight loading."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from rlc.config.model import ModelConfig
from rlc_runtime.rollout.base import Generation, SamplingParams
from rlc_runtime.rollout.hf import HFRollout
from rlc_runtime.tiny import build_model, build_tiny_checkpoint

QUESTIONS = ("1+2=", "3+4=", "a longer prompt: 9+9=")
MAX_TOKENS = 10


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_checkpoint(tmp_path_factory.mktemp("rollout") / "qwen2", "qwen2")


@pytest.fixture(scope="module")
def rollout(checkpoint: Path) -> HFRollout:
    return HFRollout(ModelConfig(path=str(checkpoint)), "cpu", torch.float32)


@pytest.fixture(scope="module")
def prompts(rollout: HFRollout) -> list[list[int]]:
    tok = rollout.tokenizer
    return [tok.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True,
                                    tokenize=True, return_dict=True)["input_ids"] for q in QUESTIONS]


def teacher_forced(model: torch.nn.Module, prompt: list[int], tokens: list[int], temperature: float) -> torch.Tensor:
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt + tokens])).logits[0, len(prompt) - 1:-1] / temperature
    return torch.log_softmax(logits, -1).gather(-1, torch.tensor(tokens)[:, None])[:, 0]


def sample(rollout: HFRollout, prompts: list[list[int]], seed: int = 1, **kw: object) -> list[Generation]:
    params = {"n": 4, "temperature": 0.8, "max_tokens": MAX_TOKENS, "seed": seed} | kw
    return rollout.generate(prompts, SamplingParams(**params))


def test_n_samples_per_prompt_with_the_log_probs_the_trainer_computes(rollout: HFRollout,
                                                                     prompts: list[list[int]]) -> None:
    rng = torch.get_rng_state()
    out = sample(rollout, prompts, top_k=50, top_p=0.95)
    assert torch.equal(rng, torch.get_rng_state())  # a seeded call leaves the caller's RNG alone
    assert [g.prompt_index for g in out] == [0] * 4 + [1] * 4 + [2] * 4
    assert len({tuple(g.token_ids) for g in out}) > 1
    for g in out:
        assert 0 < len(g.token_ids) <= MAX_TOKENS and len(g.log_probs) == len(g.token_ids)
        assert (g.finish_reason == "length") == (len(g.token_ids) == MAX_TOKENS and g.token_ids[-1] != 2)
        expected = teacher_forced(rollout.model, prompts[g.prompt_index], g.token_ids, 0.8)
        torch.testing.assert_close(torch.tensor(g.log_probs), expected, atol=1e-4, rtol=0)
    assert [g.token_ids for g in sample(rollout, prompts, top_k=50, top_p=0.95)] == [g.token_ids for g in out]
    assert [g.token_ids for g in sample(rollout, prompts, seed=2)] != [g.token_ids for g in out]


def test_generation_stops_at_any_eos_of_the_model(checkpoint: Path, rollout: HFRollout, prompts: list[list[int]],
                                                  tmp_path: Path) -> None:
    free = sample(rollout, prompts)
    stopper = free[0].token_ids[2]  # a token the seeded run samples: made an EOS, it must end the row there
    multi = tmp_path / "multi-eos"
    shutil.copytree(checkpoint, multi)
    generation = json.loads((multi / "generation_config.json").read_text())
    (multi / "generation_config.json").write_text(json.dumps(generation | {"eos_token_id": [2, stopper]}))

    stopped = sample(HFRollout(ModelConfig(path=str(multi)), "cpu"), prompts)
    assert stopped[0].finish_reason == "stop" and len(stopped[0].token_ids) <= 3
    for before, after in zip(free, stopped, strict=True):
        # The same draws (finished rows keep consuming the RNG), cut at the first EOS, which is kept.
        end = next((i + 1 for i, t in enumerate(before.token_ids) if t in (2, stopper)), None)
        assert after.token_ids == before.token_ids[:end]
        assert after.finish_reason == ("stop" if end else "length")
        torch.testing.assert_close(torch.tensor(after.log_probs), torch.tensor(before.log_probs[:end]))


def test_stop_strings_end_a_row_after_the_token_that_completes_them(rollout: HFRollout,
                                                                    prompts: list[list[int]]) -> None:
    free = sample(rollout, prompts, n=1)
    tok = rollout.tokenizer
    row = free[0].token_ids
    pieces = [tok.decode(row[i:i + 1]) for i in range(len(row))]
    index, text = next((i, piece) for i, piece in enumerate(pieces) if i > 0 and piece.strip()
                       and piece.isprintable() and "\ufffd" not in piece and piece not in tok.decode(row[:i]))
    stopped = sample(rollout, prompts, n=1, stop=(text,))
    assert stopped[0].finish_reason == "stop" and stopped[0].token_ids == row[:index + 1]
    for g in stopped:
        if g.finish_reason == "stop":
            assert text in tok.decode(g.token_ids) and text not in tok.decode(g.token_ids[:-1])


def test_greedy_and_load_weights(rollout: HFRollout, prompts: list[list[int]], checkpoint: Path) -> None:
    original = {k: v.clone() for k, v in rollout.model.state_dict().items() if k != "lm_head.weight"}
    greedy = SamplingParams(n=1, temperature=0.0, max_tokens=MAX_TOKENS)
    first = rollout.generate(prompts, greedy)
    for g in first:  # greedy log-probs are of the raw distribution (temperature 1)
        expected = teacher_forced(rollout.model, prompts[g.prompt_index], g.token_ids, 1.0)
        torch.testing.assert_close(torch.tensor(g.log_probs), expected, atol=1e-4, rtol=0)

    # (A tied random model greedily repeats the prompt's last token whatever its weights: compare seeded samples.)
    before = [g.token_ids for g in sample(rollout, prompts, seed=3, n=1)]
    other = build_model("qwen2", rollout.model.config.vocab_size, seed=7).state_dict()
    rollout.load_weights((k, v) for k, v in other.items() if k != "lm_head.weight")
    assert torch.equal(rollout.model.lm_head.weight, other["model.embed_tokens.weight"])  # tied head follows
    changed = [g.token_ids for g in sample(rollout, prompts, seed=3, n=1)]
    assert changed != before
    assert [g.token_ids for g in sample(rollout, prompts, seed=3, n=1)] == changed

    rollout.load_weights(original.items())
    assert [g.token_ids for g in sample(rollout, prompts, seed=3, n=1)] == before
    with pytest.raises(KeyError, match="no weight 'model.not_a_layer.weight'"):
        rollout.load_weights([("model.not_a_layer.weight", torch.zeros(1))])
    with pytest.raises(ValueError, match=r"model.norm.weight has shape \(128,\), the trainer sent \(3,\)"):
        rollout.load_weights([("model.norm.weight", torch.zeros(3))])
