"""The shared update (`engines.update`) against references written out in this file.

The actor's gradient must equal autograd of verl's actor loss written out by hand on a plain Hugging Face model:
each row alone and unpadded, log-probs of `logits / temperature`, PPO's clipped surrogate with the dual clip, the
entropy bonus subtracted and the k3 KL to the reference added with their coefficients, aggregated over the whole
mini-batch, while the update runs it in uneven micro-batches of padded rows. The gradient is read where the engine
holds it, at its optimizer step. A critic update must move the values toward the returns.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM

from rlc.config.defaults import fill_defaults
from rlc.config.root import RLCConfig
from rlc_runtime.batch import TokenBatch
from rlc_runtime.engines.fsdp import FSDPEngine
from rlc_runtime.engines.update import (
    compute_log_probs,
    compute_outputs,
    compute_values,
    critic_update,
    policy_update,
)
from rlc_runtime.tiny import build_tiny_checkpoint

TEMPERATURE = 0.8
CLIP_LOW, CLIP_HIGH, CLIP_C = 0.2, 0.28, 3.0
ENTROPY_COEFF, KL_COEF = 0.05, 0.3


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_checkpoint(tmp_path_factory.mktemp("update") / "qwen2", "qwen2")


def make_config(checkpoint: Path, mode: str, token_budget: int | None = None) -> RLCConfig:
    """One optimizer step over all 8 rows (ppo_mini_batch_size 4 x n 2), in micro-batches of 3 rows, or of at
    most `token_budget` tokens."""
    dynamic = {"use_dynamic_bsz": True, "ppo_max_token_len_per_gpu": token_budget} if token_budget else {}
    actor = {**dynamic, "ppo_mini_batch_size": 4, "ppo_micro_batch_size_per_gpu": 3, "loss_agg_mode": mode,
             "clip_ratio_low": CLIP_LOW, "clip_ratio_high": CLIP_HIGH, "clip_ratio_c": CLIP_C,
             "entropy_coeff": ENTROPY_COEFF, "use_kl_loss": True, "kl_loss_coef": KL_COEF,
             "kl_loss_type": "low_var_kl", "grad_clip": 1e6, "optim": {"lr": 1e-3, "weight_decay": 0.0}}
    return fill_defaults(RLCConfig.model_validate({
        "data": {"train_files": "unused.jsonl", "train_batch_size": 4},
        "algorithm": {"adv_estimator": "gae"},
        "critic": {"optim": {"lr": 2e-4, "weight_decay": 0.0}, "ppo_micro_batch_size_per_gpu": 3},
        "actor_rollout_ref": {"model": {"path": str(checkpoint), "enable_gradient_checkpointing": False},
                              "rollout": {"n": 2, "temperature": TEMPERATURE}, "actor": actor}}))


def make_batch(rows: int = 8, prompt: int = 5, response: int = 6, vocab: int = 271) -> TokenBatch:
    """Left-padded prompts and right-padded responses of different lengths; the last response is empty."""
    g = torch.Generator().manual_seed(7)
    ids = torch.randint(6, vocab, (rows, prompt + response), generator=g)
    keep = torch.zeros_like(ids)
    for i in range(rows):
        keep[i, prompt - 1 - i % prompt: prompt + 1 + (2 * i) % response] = 1
    keep[-1, prompt:] = 0
    ids[keep == 0] = 0
    return TokenBatch(ids, keep, (keep.cumsum(-1) - 1).clamp(min=0), ids[:, prompt:].clone(),
                      keep[:, prompt:].float())


def with_targets(batch: TokenBatch, current: torch.Tensor) -> TokenBatch:
    """Old log-probs around the current ones (some ratios inside the clip range, some outside, some beyond the
    dual clip), a reference nearby, and advantages of both signs."""
    g = torch.Generator().manual_seed(3)
    mask = batch.response_mask
    shift = torch.randn(current.shape, generator=g) * 0.4
    shift[::3, ::2] = -1.5  # ratio e^1.5 > clip_ratio_c: the dual clip caps these where the advantage is negative
    batch.old_log_probs = (current + shift) * mask
    batch.ref_log_probs = (current + torch.randn(current.shape, generator=g) * 0.2) * mask
    batch.advantages = torch.tensor([1.0, -1.0, 0.5, -2.0] * (len(batch) // 4))[:, None] * mask
    return batch


def hand_written_loss(model: torch.nn.Module, batch: TokenBatch, mode: str) -> torch.Tensor:
    """verl's actor loss, each row through the model alone without padding."""
    per_row = []
    for i in range(len(batch)):
        n = int(batch.response_mask[i].sum())
        keep = batch.attention_mask[i].bool()
        ids = batch.input_ids[i][keep][None]
        prompt_len = int(keep[:batch.prompt_length].sum())
        logits = model(input_ids=ids).logits[0, prompt_len - 1: prompt_len - 1 + n] / TEMPERATURE
        log_softmax = torch.log_softmax(logits, -1)
        log_prob = log_softmax.gather(-1, batch.responses[i, :n, None])[:, 0]
        entropy = -(log_softmax.exp() * log_softmax).sum(-1)
        advantage, old, ref = (t[i, :n] for t in (batch.advantages, batch.old_log_probs, batch.ref_log_probs))
        ratio = torch.exp(log_prob - old)
        surrogate = torch.maximum(-advantage * ratio, -advantage * ratio.clamp(1 - CLIP_LOW, 1 + CLIP_HIGH))
        surrogate = torch.where(advantage < 0, torch.minimum(surrogate, -advantage * CLIP_C), surrogate)
        kl = torch.exp(ref - log_prob) - (ref - log_prob) - 1
        per_row.append(surrogate - ENTROPY_COEFF * entropy + KL_COEF * kl)
    if mode == "token-mean":
        return torch.cat(per_row).mean()
    return torch.stack([row.mean() for row in per_row if len(row)]).mean()  # seq-mean-token-mean


@pytest.mark.parametrize(("mode", "token_budget"), [("token-mean", None), ("seq-mean-token-mean", None),
                                                     ("token-mean", 10)])
def test_actor_gradient_equals_autograd_of_the_loss_written_out(checkpoint: Path, mode: str,
                                                                token_budget: int | None) -> None:
    cfg = make_config(checkpoint, mode, token_budget)
    engine = FSDPEngine(cfg, "actor", "cpu")
    batch = make_batch()
    batch = with_targets(batch, compute_log_probs(engine, batch, 8)[0])
    seen: dict[str, torch.Tensor] = {}
    step, forward_backward = engine.optimizer_step, engine.forward_backward
    micro_rows: list[int] = []

    def count_then_run(parts: list[TokenBatch], *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        micro_rows.extend(len(part) for part in parts)
        return forward_backward(parts, *args, **kwargs)

    def record_then_step(lr: float, max_norm: float) -> float:
        seen.update({name: p.grad.clone() for name, p in engine.model.named_parameters()})
        return step(lr, max_norm)

    engine.optimizer_step = record_then_step  # the real step still runs: this only reads the gradient first
    engine.forward_backward = count_then_run
    metrics = policy_update(engine, cfg)(batch)
    if token_budget:  # rows of 2, 5, 8, 5, 8, 6, 3, 3 tokens: 40 in all, yet 4 groups of 10 cannot hold them
        assert batch.attention_mask.sum(-1).tolist() == [2, 5, 8, 5, 8, 6, 3, 3]
        assert sorted(micro_rows) == [1, 1, 2, 2, 2]  # {8} {8} {6, 3} {5, 5} {3, 2}
    else:
        assert micro_rows == [3, 3, 2]

    reference = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32)
    hand_written_loss(reference, batch, mode).backward()
    want = dict(reference.named_parameters())
    assert set(seen) == set(want)
    for name, grad in seen.items():
        torch.testing.assert_close(grad, want[name].grad, atol=1e-6, rtol=1e-4, msg=name)
    total = torch.cat([g.flatten() for g in seen.values()]).norm()
    assert metrics["actor/grad_norm"] == pytest.approx(float(total), rel=1e-4)
    # the batch reaches both clips, so their branches are part of what matched
    assert metrics["actor/pg_clipfrac"] > 0 and metrics["actor/pg_clipfrac_lower"] > 0


def test_critic_update_moves_values_toward_the_returns(checkpoint: Path) -> None:
    cfg = make_config(checkpoint, "token-mean")
    critic = FSDPEngine(cfg, "critic", "cpu")
    batch = make_batch()
    mask = batch.response_mask.bool()
    batch.values = compute_values(critic, batch, 8)
    batch.returns = batch.values + 0.3 * batch.response_mask
    update = critic_update(critic, cfg)
    first = update(batch)
    after = compute_values(critic, batch, 8)
    error_before = (batch.values - batch.returns)[mask].abs()
    error_after = (after - batch.returns)[mask].abs()
    assert error_after.mean() < 0.5 * error_before.mean()
    assert (error_after < error_before).float().mean() > 0.9
    assert update(batch)["critic/vf_loss"] < first["critic/vf_loss"]


def test_dynamic_batches_give_the_fixed_batches_log_probs_in_row_order(checkpoint: Path) -> None:
    engine = FSDPEngine(make_config(checkpoint, "token-mean"), "ref", "cpu")
    batch = make_batch()
    fixed, fixed_entropy = compute_log_probs(engine, batch, 3, with_entropy=True)
    dynamic, dynamic_entropy = compute_log_probs(engine, batch, None, with_entropy=True, token_budget=10)
    torch.testing.assert_close(dynamic, fixed, atol=1e-6, rtol=0)
    torch.testing.assert_close(dynamic_entropy, fixed_entropy, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="a sequence of 8 tokens exceeds the micro-batch token budget 7"):
        compute_log_probs(engine, batch, None, token_budget=7)


def test_sum_pi_squared_is_the_squared_softmax_summed_over_the_vocabulary(checkpoint: Path) -> None:
    engine = FSDPEngine(make_config(checkpoint, "token-mean"), "ref", "cpu")
    batch = make_batch()
    got = compute_outputs(engine, batch, 3, ("log_probs", "sum_pi_squared"))
    model = AutoModelForCausalLM.from_pretrained(checkpoint)
    for i in range(len(batch)):
        n = int(batch.response_mask[i].sum())
        keep = batch.attention_mask[i].bool()
        prompt_len = int(keep[:batch.prompt_length].sum())
        with torch.no_grad():
            logits = model(input_ids=batch.input_ids[i][keep][None]).logits[0, prompt_len - 1: prompt_len - 1 + n]
        probs = torch.softmax(logits / TEMPERATURE, -1)
        torch.testing.assert_close(got["sum_pi_squared"][i, :n], (probs ** 2).sum(-1), atol=1e-5, rtol=1e-4)
        assert got["sum_pi_squared"][i, n:].abs().sum() == 0  # padding
    torch.testing.assert_close(got["log_probs"], compute_log_probs(engine, batch, 3)[0])


def test_a_non_finite_gradient_skips_the_step(checkpoint: Path) -> None:
    cfg = make_config(checkpoint, "token-mean")
    engine = FSDPEngine(cfg, "actor", "cpu")
    update = policy_update(engine, cfg)
    batch = make_batch()
    batch = with_targets(batch, compute_log_probs(engine, batch, 8)[0])
    before = {name: tensor.clone() for name, tensor in engine.named_weights()}
    poisoned = TokenBatch(**{**vars(batch), "advantages": batch.advantages.clone()})
    poisoned.advantages[0, 0] = float("nan")
    metrics = update(poisoned)
    assert metrics["actor/grad_norm"] != metrics["actor/grad_norm"]  # NaN, reported as such
    assert all(torch.equal(tensor, before[name]) for name, tensor in engine.named_weights())
    assert all(p.grad is None for p in engine.model.parameters())  # nothing carried into the next step
    assert update(batch)["actor/grad_norm"] > 0
    assert any(not torch.equal(tensor, before[name]) for name, tensor in engine.named_weights())
