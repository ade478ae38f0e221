"""Every policy loss against numbers worked out by hand (the arithmetic is in the comments), its gradient against
the derivative written out, and the four aggregation modes against their formulas."""

import math
from types import SimpleNamespace

import pytest
import torch

from rlc.config.actor import LOSS_MODES
from rlc_runtime.algorithms.policy_losses import POLICY_LOSS_MODES, compute_policy_loss

LN = math.log


def config(**policy_loss: float) -> SimpleNamespace:
    params = dict(clip_cov_ratio=0.0002, clip_cov_lb=1.0, clip_cov_ub=5.0, kl_cov_ratio=0.0002, ppo_kl_coef=0.1,
                  dro_beta=0.5)
    return SimpleNamespace(clip_ratio=0.2, clip_ratio_low=0.2, clip_ratio_high=0.28, clip_ratio_c=3.0, tau_pos=1.0,
                           tau_neg=1.05, policy_loss=SimpleNamespace(**(params | policy_loss)))


def bypass(**correction: object) -> SimpleNamespace:
    """algorithm.rollout_correction in bypass mode, verl's defaults unless given."""
    return SimpleNamespace(**({"rollout_is": None, "rollout_is_threshold": 2.0, "rollout_is_batch_normalize": False,
                               "rollout_rs": None, "rollout_rs_threshold": None, "loss_type": "ppo_clip"}
                              | correction))


def run(mode: str, log_prob: list[list[float]], log_ratio: list[list[float]], advantages: list[list[float]],
        mask: list[list[float]], agg: str = "token-mean", cfg: SimpleNamespace | None = None, weights=None,
        correction: SimpleNamespace | None = None):
    new = torch.tensor(log_prob, dtype=torch.float64, requires_grad=True)
    old = new.detach() - torch.tensor(log_ratio, dtype=torch.float64)
    loss, metrics = compute_policy_loss(mode, old, new, torch.tensor(advantages, dtype=torch.float64),
                                        torch.tensor(mask, dtype=torch.float64), agg, cfg or config(), weights,
                                        correction)
    loss.backward()
    return loss.item(), {k: v.item() for k, v in metrics.items()}, new.grad[0].tolist()


def test_the_registry_is_the_schemas_list_of_loss_modes() -> None:
    assert set(POLICY_LOSS_MODES) == set(LOSS_MODES)


def test_vanilla_clip_higher_dual_clip_and_masking_by_hand() -> None:
    # ratios 1.5, 0.5, 10 (extreme), masked; A = 1, 1, -1, -2; clip [0.8, 1.28], dual clip at 3.
    # tok0: max(-1.5, -1.28) = -1.28 (clipped); tok1: max(-0.5, -0.8) = -0.5; tok2: max(10, 1.28) = 10, capped at 3.
    loss, m, grad = run("vanilla", [[-1.0, -1.0, -1.0, -1.0]], [[LN(1.5), LN(0.5), LN(10), 0.0]],
                        [[1.0, 1.0, -1.0, -2.0]], [[1, 1, 1, 0]])
    assert loss == pytest.approx((-1.28 - 0.5 + 3) / 3)
    assert m["actor/pg_clipfrac"] == pytest.approx(1 / 3) and m["actor/pg_clipfrac_lower"] == pytest.approx(1 / 3)
    assert m["actor/ppo_kl"] == pytest.approx(-(LN(1.5) + LN(0.5) + LN(10)) / 3)
    # Only the unclipped token passes a gradient: d(-A r)/d log p = -A r = -0.5, over 3 tokens.
    assert grad == pytest.approx([0.0, -0.5 / 3, 0.0, 0.0])


def test_vanilla_survives_an_exploded_ratio() -> None:
    loss, _, grad = run("vanilla", [[0.0]], [[500.0]], [[-1.0]], [[1]])
    assert loss == pytest.approx(3.0) and grad == [0.0]  # the dual clip caps it at -A * clip_ratio_c


def test_gspo_uses_one_ratio_per_sequence() -> None:
    # log ratios ln 2, 0 -> the sequence's ratio is 2^(1/2) = 1.41421 for both tokens.
    # A = 1: clipped at 1.28, no gradient. A = -1: max(1.41421, 1.28) = 1.41421, d/d log p_t = -A s / 2 per token.
    loss, m, grad = run("gspo", [[-1.0, -1.0]], [[LN(2), 0.0]], [[1.0, 1.0]], [[1, 1]], "seq-mean-token-mean")
    assert loss == pytest.approx(-1.28) and m["actor/pg_clipfrac"] == 1.0 and grad == [0.0, 0.0]
    loss, m, grad = run("gspo", [[-1.0, -1.0]], [[LN(2), 0.0]], [[-1.0, -1.0]], [[1, 1]], "seq-mean-token-mean")
    assert loss == pytest.approx(math.sqrt(2)) and m["actor/pg_clipfrac"] == 0.0
    assert grad == pytest.approx([math.sqrt(2) / 2] * 2)


def test_geo_mean_clips_each_token_pessimistically() -> None:
    # A = 1, log ratios 0.5, -0.5, bounds [-0.2, 0.28]: min(lr, clamp(lr)) = 0.28, -0.5 -> exp(mean) = exp(-0.11).
    loss, m, _ = run("geo_mean", [[-1.0, -1.0]], [[0.5, -0.5]], [[1.0, 1.0]], [[1, 1]], "seq-mean-token-mean")
    assert loss == pytest.approx(-math.exp(-0.11))
    assert m["actor/pg_clipfrac"] == 1.0 and m["actor/pg_clipfrac_lower"] == 0.0


def test_cispo_keeps_every_tokens_gradient_weighted_by_the_clipped_ratio() -> None:
    # ratios 2, 0.5 -> weights 1.28, 0.8 (not differentiated); loss = -w A log p, d/d log p = -w A, over 2 tokens.
    loss, m, grad = run("cispo", [[LN(0.4), LN(0.2)]], [[LN(2), LN(0.5)]], [[1.0, 1.0]], [[1, 1]])
    assert loss == pytest.approx(-(1.28 * LN(0.4) + 0.8 * LN(0.2)) / 2)
    assert grad == pytest.approx([-1.28 / 2, -0.8 / 2]) and m["actor/pg_clipfrac"] == 1.0


def test_sapo_gate_by_hand() -> None:
    # r = 2, A = 1, tau 1: loss = -(4/1) sigmoid(1) = -2.924234; d/d log p = -4 s (1 - s) r with s = sigmoid(1).
    s = 1 / (1 + math.exp(-1))
    loss, _, grad = run("sapo", [[-1.0]], [[LN(2)]], [[1.0]], [[1]])
    assert loss == pytest.approx(-4 * s) and grad == pytest.approx([-4 * s * (1 - s) * 2])
    # At r = 1 the gate's slope is 1: the gradient is PPO's, -A (here A = -1, tau_neg).
    _, _, grad = run("sapo", [[-1.0]], [[0.0]], [[-1.0]], [[1]])
    assert grad == pytest.approx([1.0])


def test_gpg_is_the_plain_policy_gradient() -> None:
    loss, m, grad = run("gpg", [[LN(0.5), LN(0.25)]], [[3.0, -3.0]], [[2.0, 2.0]], [[1, 1]])
    assert loss == pytest.approx(-2 * (LN(0.5) + LN(0.25)) / 2) and grad == pytest.approx([-1.0, -1.0]) and m == {}


def test_clip_cov_cuts_the_gradient_of_high_covariance_tokens() -> None:
    # A = 3, 1 (mean 2), log p = -0.5, -3.5 (mean -2): covariances 1 x 1.5 and -1 x -1.5 = 1.5, both in (1, 5).
    # Uncut, the token-mean gradient d/d log p = -A r / 2 = -1.5, -0.5.
    args = ([[-0.5, -3.5]], [[0.0, 0.0]], [[3.0, 1.0]], [[1, 1]])
    loss, m, grad = run("clip_cov", *args, cfg=config(clip_cov_ratio=1.0))  # budget int(1 x 2) = 2: both cut
    assert loss == 0.0 and grad == [0.0, 0.0] and m["actor/pg_clipfrac"] == 1.0
    _, m, grad = run("clip_cov", *args, cfg=config(clip_cov_ratio=0.1))  # budget max(1, 0) = 1 token
    assert m["actor/pg_clipfrac"] == 0.5 and grad in ([0.0, -0.5], [-1.5, 0.0])
    loss, m, _ = run("clip_cov", *args, cfg=config(clip_cov_ub=1.2))  # 1.5 is out of bounds: plain PPO
    assert loss == pytest.approx(-2.0) and m["actor/pg_clipfrac"] == 0.0


def test_kl_cov_penalises_the_top_covariance_token() -> None:
    # A = 2, 0, 1 (mean 1); log p = -0.5, -3.5, -1 (mean -5/3): covariances 7/6, 11/6, 0 -> token 1 is the top 1.
    # log r = 0.1 everywhere: losses -2 e^0.1, 0 + 0.1 x 0.1, -e^0.1.
    loss, m, _ = run("kl_cov", [[-0.5, -3.5, -1.0]], [[0.1, 0.1, 0.1]], [[2.0, 0.0, 1.0]], [[1, 1, 1]],
                     cfg=config(kl_cov_ratio=0.34))
    assert loss == pytest.approx((-3 * math.exp(0.1) + 0.01) / 3) and m["actor/ppo_kl"] == pytest.approx(0.1)


# At ratio 1 each mode's token loss is a constant per row: -A for the ratio losses, -A log p for gpg and cispo,
# -A x 2 / tau for sapo. Rows: A = 1 over 2 tokens, A = -2 over 3 tokens, T = 4.
# dppo_tv, dppo_kl and dro are -A log p at ratio 1 too (nothing leaves the trust region; no quadratic penalty).
ROW_VALUES = {"gpg": (-LN(0.5), 2 * LN(0.5)), "cispo": (-LN(0.5), 2 * LN(0.5)), "sapo": (-2.0, 4 / 1.05),
              "dppo_tv": (-LN(0.5), 2 * LN(0.5)), "dppo_kl": (-LN(0.5), 2 * LN(0.5)), "dro": (-LN(0.5), 2 * LN(0.5))}
AGGREGATE = {"token-mean": lambda a, b: (2 * a + 3 * b) / 5,
             "seq-mean-token-sum": lambda a, b: (2 * a + 3 * b) / 2,
             "seq-mean-token-mean": lambda a, b: (a + b) / 2,
             "seq-mean-token-sum-norm": lambda a, b: (2 * a + 3 * b) / 4}


@pytest.mark.parametrize("agg", list(AGGREGATE))
@pytest.mark.parametrize("mode", LOSS_MODES)
def test_every_mode_with_every_aggregation(mode: str, agg: str) -> None:
    loss, _, _ = run(mode, [[LN(0.5)] * 4] * 2, [[0.0] * 4] * 2, [[1.0] * 4, [-2.0] * 4],
                     [[1, 1, 0, 0], [1, 1, 1, 0]], agg, correction=bypass() if mode == "bypass_mode" else None)
    assert loss == pytest.approx(AGGREGATE[agg](*ROW_VALUES.get(mode, (-1.0, 2.0))))


def test_rollout_weights_scale_each_tokens_loss() -> None:
    loss, _, grad = run("gpg", [[0.0, 0.0]], [[0.0, 0.0]], [[1.0, 1.0]], [[1, 1]],
                        weights=torch.tensor([[2.0, 0.5]], dtype=torch.float64))
    assert grad == pytest.approx([-1.0, -0.25])


def test_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="loss_mode 'ppo' is not one of"):
        run("ppo", [[0.0]], [[0.0]], [[1.0]], [[1]])


def test_dppo_tv_drops_tokens_whose_probability_moved_too_far() -> None:
    # pi_old -> pi, A: 0.5 -> 0.9, +1 (rise 0.4 > clip_ratio_high 0.28: dropped); 0.5 -> 0.6, +1 (kept, r 1.2);
    # 0.5 -> 0.2, -1 (fall 0.3 > clip_ratio_low 0.2: dropped); 0.1 -> 0.8, -1 (kept, r 8 truncated at c = 3);
    # a fifth token masked. Loss -A sg(min(r, 3)) log p over 4 tokens; d/d log p = -A min(r, 3) / 4 where kept.
    loss, m, grad = run("dppo_tv", [[LN(0.9), LN(0.6), LN(0.2), LN(0.8), 0.0]],
                        [[LN(1.8), LN(1.2), LN(0.4), LN(8), 5.0]], [[1.0, 1.0, -1.0, -1.0, 1.0]], [[1, 1, 1, 1, 0]])
    assert loss == pytest.approx((-1.2 * LN(0.6) + 3 * LN(0.8)) / 4)
    assert grad == pytest.approx([0.0, -1.2 / 4, 0.0, 3 / 4, 0.0])
    assert m["actor/pg_clipfrac"] == 0.5 and m["actor/pg_clipfrac_lower"] == 0.25
    assert m["actor/ppo_kl"] == pytest.approx(-(LN(1.8) + LN(1.2) + LN(0.4) + LN(8)) / 4)


def test_dppo_kl_bounds_the_binary_kl_only_in_the_pushed_direction() -> None:
    # KL(Bern(p_o) || Bern(p)) = p_o ln(p_o/p) + (1-p_o) ln((1-p_o)/(1-p)):
    # 0.5 -> 0.9, A +1: 0.5 ln(5/9) + 0.5 ln 5 = 0.5108 > 0.28, and pi rose: dropped.
    # 0.5 -> 0.6, A +1: 0.5 ln(5/6) + 0.5 ln(5/4) = 0.0204: kept, r = 1.2.
    # 0.5 -> 0.2, A -1: 0.5 ln 2.5 + 0.5 ln(5/8) = 0.2231 > 0.2, and pi fell: dropped.
    # 0.9 -> 0.1, A +1: pi fell against the push: kept however far (r = 1/9).
    loss, m, grad = run("dppo_kl", [[LN(0.9), LN(0.6), LN(0.2), LN(0.1)]], [[LN(1.8), LN(1.2), LN(0.4), LN(1 / 9)]],
                        [[1.0, 1.0, -1.0, 1.0]], [[1, 1, 1, 1]])
    assert loss == pytest.approx((-1.2 * LN(0.6) - LN(0.1) / 9) / 4)
    assert grad == pytest.approx([0.0, -1.2 / 4, 0.0, -1 / 9 / 4])
    assert m["actor/pg_clipfrac"] == 0.5 and m["actor/pg_clipfrac_lower"] == 0.0


def test_dppo_survives_an_exploded_ratio() -> None:
    # r = e^20 (clamped from e^500), A = -1, pi rose to 1: kept, weight truncated at 3: loss 3 x log 1 = 0.
    loss, m, grad = run("dppo_tv", [[0.0]], [[500.0]], [[-1.0]], [[1]])
    assert loss == 0.0 and grad == [3.0] and m["actor/pg_clipfrac_lower"] == 1.0


def test_dro_adds_a_quadratic_log_ratio_penalty() -> None:
    # beta 0.5, log p = ln 0.5, log r = 0.4, A = 2: loss = -(2 ln 0.5 - 0.25 x 0.16); the masked token is left out.
    # d/d log p = -(A - beta log r) = -(2 - 0.2) = -1.8.
    loss, m, grad = run("dro", [[LN(0.5), 0.0]], [[0.4, 3.0]], [[2.0, 2.0]], [[1, 0]])
    assert loss == pytest.approx(-2 * LN(0.5) + 0.04) and grad == pytest.approx([-1.8, 0.0])
    assert m["actor/ppo_kl"] == pytest.approx(-0.4)
    with pytest.raises(ValueError, match="dro needs policy_loss.dro_beta > 0"):
        run("dro", [[0.0]], [[0.0]], [[1.0]], [[1]], cfg=config(dro_beta=None))


def test_bypass_ppo_clip_rejects_then_clips_against_the_rollout() -> None:
    # Ratios to the rollout 1.5, 1, 10; token_k1 keeps rollout/current in [0.5, 2]: the third (1/10) is rejected.
    # Vanilla PPO on the two left, A = 1: max(-1.5, -1.28) = -1.28 (clipped, no gradient) and -1 (d/d log p = -1).
    loss, m, grad = run("bypass_mode", [[-1.0, -1.0, -1.0]], [[LN(1.5), 0.0, LN(10)]], [[1.0, 1.0, 1.0]],
                        [[1, 1, 1]], correction=bypass(rollout_rs="token_k1", rollout_rs_threshold="0.5_2"))
    assert loss == pytest.approx((-1.28 - 1) / 2) and grad == pytest.approx([0.0, -0.5, 0.0])
    assert m["rollout_corr/rollout_rs_masked_fraction"] == pytest.approx(1 / 3)
    assert m["actor/pg_clipfrac"] == pytest.approx(0.5)


def test_bypass_reinforce_weighs_the_policy_gradient_by_truncated_ratios() -> None:
    # Token IS weights min(r, 2) = 1.5, 1, 2; loss -A w log p with A = 1, log p = -1: (1.5 + 1 + 2) / 3 = 1.5.
    correction = bypass(rollout_is="token", loss_type="reinforce")
    loss, m, grad = run("bypass_mode", [[-1.0, -1.0, -1.0]], [[LN(1.5), 0.0, LN(10)]], [[1.0, 1.0, 1.0]],
                        [[1, 1, 1]], correction=correction)
    assert loss == pytest.approx(1.5) and grad == pytest.approx([-0.5, -1 / 3, -2 / 3])
    assert m["actor/ppo_kl"] == pytest.approx(-(LN(1.5) + LN(10)) / 3)
    assert m["rollout_corr/rollout_is_ratio_fraction_high"] == pytest.approx(1 / 3)
    # vanilla in bypass mode is verl's bypass loss too (its trainer switches the mode); bypass_mode needs bypass.
    assert run("vanilla", [[-1.0, -1.0, -1.0]], [[LN(1.5), 0.0, LN(10)]], [[1.0, 1.0, 1.0]], [[1, 1, 1]],
               correction=correction)[0] == pytest.approx(1.5)
    with pytest.raises(ValueError, match="needs algorithm.rollout_correction.bypass_mode"):
        run("bypass_mode", [[0.0]], [[0.0]], [[1.0]], [[1]])
