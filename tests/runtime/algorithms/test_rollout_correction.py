"""Rollout correction's weights, rejection and metrics against values worked out by hand."""

import math

import pytest
import torch

from rlc_runtime.algorithms.rollout_correction import importance_weights, parse_thresholds, rejection_mask

LN = math.log


def test_token_weights_are_truncated_then_normalised() -> None:
    # ratios 3, 0.5 and a padded token: truncated at 2 -> 2, 0.5; batch-normalised by their mean 1.25 -> 1.6, 0.4.
    log_ratio, mask = torch.tensor([[LN(3), LN(0.5), 9.0]]), torch.tensor([[1.0, 1.0, 0.0]])
    weights, m = importance_weights(log_ratio, mask, "token", 2.0, batch_normalize=False)
    assert weights.flatten().tolist() == pytest.approx([2.0, 0.5, 0.0])
    assert m["rollout_is_mean"] == pytest.approx(1.75) and m["rollout_is_ratio_fraction_high"] == 0.5
    weights, m = importance_weights(log_ratio, mask, "token", 2.0, batch_normalize=True)
    assert weights.flatten().tolist() == pytest.approx([1.6, 0.4, 0.0]) and m["rollout_is_batch_norm_factor"] == 1.25


def test_sequence_weights_multiply_the_token_ratios() -> None:
    # 2 x 2 = 4, truncated at 3; the second row 0.5 x 1 = 0.5; an extreme ratio stays finite.
    weights, _ = importance_weights(torch.tensor([[LN(2), LN(2)], [LN(0.5), 0.0], [900.0, 0.0]]),
                                    torch.ones(3, 2), "sequence", 3.0, batch_normalize=False)
    assert weights.flatten().tolist() == pytest.approx([3.0, 3.0, 0.5, 0.5, 3.0, 3.0])


def test_token_k1_rejects_tokens_out_of_ratio_bounds() -> None:
    # threshold 2 -> bounds [0.5, 2] on pi_rollout / pi_old: ratios (old/rollout) 3 is out, 1 and 0.6 in.
    mask, m = rejection_mask(torch.tensor([[LN(3), 0.0, LN(0.6)]]), torch.ones(1, 3), "token_k1", 2.0)
    assert mask.tolist() == [[0.0, 1.0, 1.0]]
    assert m["rollout_rs_masked_fraction"] == pytest.approx(1 / 3) and m["rollout_rs_seq_masked_fraction"] == 1.0


def test_sequence_rejection_drops_whole_rows() -> None:
    # k2 = 0.5 lr^2: row 0 tokens 0.5 x 1 = 0.5 and 0 -> mean 0.25 > 0.2, rejected; row 1 mean 0.005, kept.
    mask, m = rejection_mask(torch.tensor([[1.0, 0.0], [0.1, 0.1]]), torch.ones(2, 2), "seq_mean_k2", "0.2")
    assert mask.tolist() == [[0.0, 0.0], [1.0, 1.0]] and m["rollout_rs_seq_masked_fraction"] == 0.5


def test_threshold_specs() -> None:
    assert parse_thresholds(["token_k1", "seq_max_k3"], "0.8_1.5,4") == {"token_k1": (0.8, 1.5),
                                                                        "seq_max_k3": (None, 4.0)}
    assert parse_thresholds(["seq_sum_k1"], 2) == {"seq_sum_k1": (0.5, 2.0)}
    with pytest.raises(ValueError, match="one upper bound"):
        parse_thresholds(["token_k2"], "0.1_2")
    with pytest.raises(ValueError, match="keeps no token: lower bound 1.92308 is above upper bound 0.52"):
        parse_thresholds(["token_k1"], 0.52)  # what YAML makes of an unquoted 0.5_2
    with pytest.raises(ValueError, match="each option must be one of"):
        rejection_mask(torch.zeros(1, 1), torch.ones(1, 1), "token_k9", 1.0)


def test_mismatch_metrics_and_rejection_before_weighting() -> None:
    from types import SimpleNamespace

    from rlc_runtime.algorithms.rollout_correction import apply_rollout_correction

    # Token 0: trainer 0.5, rollout 0.25 -> rho = 2; token 1: trainer 0.5, rollout 0.05 -> rho = 10, rejected by
    # token_k1 at 4 (bounds 0.25..4), so the weights only see token 0.
    old, rollout = torch.tensor([[LN(0.5), LN(0.5)]]), torch.tensor([[LN(0.25), LN(0.05)]])
    cfg = SimpleNamespace(rollout_rs="token_k1", rollout_rs_threshold=4.0, rollout_is="token",
                          rollout_is_threshold=5.0, rollout_is_batch_normalize=False)
    weights, mask, m = apply_rollout_correction(cfg, old, rollout, torch.ones(1, 2))
    assert mask.tolist() == [[1.0, 0.0]] and weights.flatten().tolist() == pytest.approx([2.0, 0.0])
    # Over both tokens: kl = mean(log rollout - log old) = (-ln 2 - ln 10) / 2; chi2 = (4 + 100) / 2 - 1;
    # perplexities exp(-mean log p): trainer 2, rollout exp((ln 4 + ln 20) / 2) = sqrt(80).
    assert m["rollout_corr/kl"] == pytest.approx(-(LN(2) + LN(10)) / 2)
    assert m["rollout_corr/k3_kl"] == pytest.approx((2 - 1 - LN(2) + 10 - 1 - LN(10)) / 2)
    assert m["rollout_corr/chi2_token"] == pytest.approx(51.0)
    assert m["rollout_corr/training_ppl"] == pytest.approx(2.0)
    assert m["rollout_corr/rollout_ppl"] == pytest.approx(math.sqrt(80))
    assert m["rollout_corr/rollout_rs_masked_fraction"] == 0.5 and m["rollout_corr/rollout_is_mean"] == 2.0
