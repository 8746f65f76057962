"""Exact checks of AutoMetFlow by enumerating its discrete paths on a 2-D target.

Given the innovation noise, ``K`` MetFlow steps move ``z_0`` along one of ``4^K`` paths (a
direction and an accept/reject decision per step), each a diffeomorphism, so every density and
expectation of the guide is a finite sum of grid integrals:

* the marginal density ``q_K`` of the final state, by a backward recursion over the ``3^K``
  moves (forward accepted, inverse accepted, rejected; a rejection merges both directions);
* the extended-space bound ``L_ext``, the mean importance weight and the mean of ``z_K``, by a
  forward recursion over the ``4^K`` paths from each ``z_0``.

Both are written here from the MetFlow definitions and share only the guide's maps
(``moves``), target (``log_joint``), base parameters and direction logit; they are checked
against each other, against the guide's draws and ELBO, and against its REINFORCE gradient.
The target is a normalised two-component Gaussian mixture, so ``log Z = 0``.
"""

import math

import pyro
import pytest
import torch
from metflow_paths import (
    ABLATION_BATCHES,
    DIRECTION_LOGIT,
    GRADIENT_BATCHES,
    GRADIENT_GRID_POINTS,
    NUM_DRAWS,
    NUM_WEIGHT_DRAWS,
    WEIGHT_CAP,
    _case,
    _exact_bound,
    _exact_bound_gradient,
    _features,
    _log_accept_reject,
    _log_marginal,
    _log_p_direction,
    _log_ratio,
    _mc_gradients,
    _mean_se,
    _outcome_frequencies,
    mixture_model,
)
from pyro.infer import Trace_ELBO

import pyroext.guides.score as score_module
from pyroext.guides import AutoMetFlow
from pyroext.kernels import fixed_reverse_logits

ACCEPTANCE_RULES = ["barker", "mh"]
STEPS = [1, 2, pytest.param(3, marks=pytest.mark.slow)]
REVERSE_MODELS = ["fixed", "learned", "conditional"]


# 1. The marginal density of z_K, its moments, and the bounds.


def _guide_draws(guide, K):
    """The guide's draws of z_K for the checks of section 1 (the same for both tests), their
    log-weights and the mean acceptance probability."""
    pyro.set_rng_seed(100 + K)
    draws = guide.sample_latents(NUM_DRAWS)
    acceptance_rate = float(guide.sample_stats["acceptance_rate"].mean())
    return draws, guide.sample_stats["log_weight"], acceptance_rate


@pytest.mark.parametrize("acceptance", ACCEPTANCE_RULES)
@pytest.mark.parametrize("K", STEPS)
def test_marginal_density_by_enumeration(K, acceptance):
    case = _case(K, acceptance)
    guide, weights = case.guide, case.grid_weights
    density = case.log_marginal.exp()

    # The target is normalised, and both enumerations conserve probability and agree.
    assert abs(float((weights * case.log_gamma.exp()).sum()) - 1) < 1e-6
    mass = float((weights * density).sum())
    assert abs(mass - 1) < 2e-3, mass
    assert abs(float(case.forward.mass) - 1) < 1e-6
    exact_features = (weights * density) @ _features(case.grid)
    torch.testing.assert_close(exact_features[:2], case.forward.mean, atol=1e-4, rtol=0)

    draws, _, acceptance_rate = _guide_draws(guide, K)
    assert 0.05 < acceptance_rate < 0.95, acceptance_rate

    # (b) Means, second moments and soft 3 x 3 histogram of z_K, against the exact density.
    features = _features(draws)
    mc = features.mean(0)
    se = features.std(0) / math.sqrt(NUM_DRAWS)
    print(f"K={K} {acceptance}: acceptance {acceptance_rate:.3f}, mass {mass:.7f}")
    print("  features exact", exact_features.tolist())
    print("  features MC   ", mc.tolist())
    print("  z-scores      ", ((mc - exact_features) / se).tolist())
    assert ((mc - exact_features).abs() <= 4 * se).all()


@pytest.mark.parametrize("reverse_model", REVERSE_MODELS)
@pytest.mark.parametrize("acceptance", ACCEPTANCE_RULES)
@pytest.mark.parametrize("K", STEPS)
def test_bounds_by_enumeration(K, acceptance, reverse_model):
    """(c) L_ext <= L_marg <= log Z = 0, with the exact values and with Monte Carlo."""
    case = _case(K, acceptance, reverse_model)
    guide, weights = case.guide, case.grid_weights
    density = case.log_marginal.exp()
    draws, log_weight, _ = _guide_draws(guide, K)
    with torch.no_grad():
        log_gamma = guide.log_joint(draws)
        log_marginal = _log_marginal(guide, acceptance, draws, K)
    marginal_terms = log_gamma - log_marginal
    mask = density > 0
    exact_marginal_bound = float(
        (weights * density)[mask] @ (case.log_gamma - case.log_marginal)[mask]
    )
    exact_bound = float(case.forward.bound)
    assert exact_bound < exact_marginal_bound < 0

    pyro.set_rng_seed(200 + K)
    elbo = Trace_ELBO(num_particles=NUM_DRAWS, vectorize_particles=True, max_plate_nesting=0)
    with torch.no_grad():
        bound = -elbo.loss(mixture_model, guide)
    elbo_log_weight = guide.sample_stats["log_weight"]
    assert elbo_log_weight.shape == (NUM_DRAWS,)
    assert abs(bound - float(elbo_log_weight.mean())) < 1e-8
    _, bound_se = _mean_se(elbo_log_weight)
    marginal_bound, marginal_se = _mean_se(marginal_terms)
    gap, gap_se = _mean_se(marginal_terms - log_weight)  # paired, on the same draws
    print(f"  L_ext  exact {exact_bound:.5f}  MC {bound:.5f} +- {bound_se:.5f}")
    print(
        f"  L_marg exact {exact_marginal_bound:.5f}  MC {marginal_bound:.5f} +- {marginal_se:.5f}"
    )
    print(f"  L_marg - L_ext exact {exact_marginal_bound - exact_bound:.5f}")
    print(f"                 MC {gap:.5f} +- {gap_se:.5f}")
    assert abs(bound - exact_bound) <= 4 * bound_se
    assert abs(marginal_bound - exact_marginal_bound) <= 4 * marginal_se
    assert bound <= marginal_bound + 4 * math.hypot(bound_se, marginal_se)
    assert marginal_bound <= 4 * marginal_se
    # A reverse model other than the exact one makes the extended bound strictly looser.
    assert gap > 4 * gap_se
    assert abs(gap - (exact_marginal_bound - exact_bound)) <= 4 * gap_se


# 2. Importance weights: unbiased for Z = 1 with Barker acceptance.


@pytest.mark.parametrize("reverse_model", REVERSE_MODELS)
@pytest.mark.parametrize("acceptance", ACCEPTANCE_RULES)
@pytest.mark.parametrize("K", STEPS)
def test_importance_weights(K, acceptance, reverse_model):
    """``E[w] = Z`` where the reverse model's support is inside the guide's: with Barker
    acceptance. MH never rejects a move it accepts surely, while either reverse model still
    gives those rejections mass, so ``E[w] < Z`` (still a valid bound).

    The weights have infinite variance, so their plain Monte Carlo mean has no valid error
    bar; the guide's weights are checked through ``E[min(w, cap)]``, whose exact value is
    known, and ``E[w]`` is checked exactly on the grid.
    """
    case = _case(K, acceptance, reverse_model)
    guide, exact = case.guide, case.forward
    if acceptance == "barker":
        assert abs(float(exact.weight) - 1) < 1e-3, float(exact.weight)
    else:
        assert float(exact.weight) < 0.95, float(exact.weight)
    if K == 1 and reverse_model == "fixed":
        # E[w] = 1/2 (accepted paths) + 1/2 int gamma(z) sum_v P(v) [alpha_v(z) < 1] dz.
        rejectable = 0.0
        with torch.no_grad():
            for v in (1, -1):
                log_ratio, _, _, _ = _log_ratio(guide, 0, case.grid, v, case.log_gamma)
                _, _, can_reject = _log_accept_reject(log_ratio, acceptance)
                rejectable = rejectable + _log_p_direction(guide, v).exp() * can_reject
        expected = 0.5 + 0.5 * float((case.grid_weights * case.log_gamma.exp() * rejectable).sum())
        assert abs(float(exact.weight) - expected) < 1e-3

    pyro.set_rng_seed(300 + K)
    guide.sample_latents(NUM_WEIGHT_DRAWS)
    weight = guide.sample_stats["log_weight"].exp()
    capped, capped_se = _mean_se(weight.clamp(max=WEIGHT_CAP))
    raw, raw_se = _mean_se(weight)
    print(f"K={K} {acceptance}: E[w] exact {float(exact.weight):.5f}")
    print(f"  MC {raw:.5f} +- {raw_se:.5f} (invalid error bar), max w {float(weight.max()):.1f}")
    print(f"  E[min(w, {WEIGHT_CAP})] exact {float(exact.capped_weight):.5f}")
    print(f"  MC {capped:.5f} +- {capped_se:.5f}")
    assert abs(capped - float(exact.capped_weight)) <= 4 * capped_se
    # The cap matters: the weights beyond it carry a sizeable part of E[w].
    assert float(exact.weight - exact.capped_weight) > 0.02


# 3. The REINFORCE gradient with respect to the direction logit.
@pytest.mark.parametrize(
    ("K", "acceptance", "reverse_model"),
    [
        (1, "barker", "fixed"),
        (1, "mh", "fixed"),
        (1, "barker", "learned"),
        (2, "barker", "conditional"),
        pytest.param(2, "barker", "fixed", marks=pytest.mark.slow),
        pytest.param(2, "mh", "learned", marks=pytest.mark.slow),
    ],
)
def test_direction_logit_gradient_is_unbiased(K, acceptance, reverse_model, monkeypatch):
    """The direction logit moves only the discrete choices' probabilities (and the ratio), so
    the pathwise part of its gradient has mean zero (with a fixed reverse model, whose
    ``P(v)`` cancels the forward one) and the score term carries it all. A reverse model
    conditioned on ``z_K`` is checked at K = 2, where the first step's choices also move the
    second step's reverse term."""
    guide = _case(K, acceptance, reverse_model).guide
    exact = float(_exact_bound_gradient(guide, acceptance, GRADIENT_GRID_POINTS))

    pyro.set_rng_seed(400 + K)
    estimate, se = _mean_se(_mc_gradients(guide, GRADIENT_BATCHES))
    print(f"K={K} {acceptance}: dL/dlogit exact {exact:.5f}, MC {estimate:.5f} +- {se:.5f}")
    assert abs(estimate - exact) <= 4 * se

    # Without the score term the estimate misses the gradient: the check has power.
    monkeypatch.setattr(
        score_module,
        "score_function_term",
        lambda elbo, log_prob_choices, baseline: torch.zeros_like(elbo),
    )
    ablated, ablated_se = _mean_se(_mc_gradients(guide, ABLATION_BATCHES))
    print(f"  without score term: {ablated:.5f} +- {ablated_se:.5f}")
    # The exact gradient has no error, so the ablated estimate's own error decides. With the
    # fixed reverse model the score term carries the whole gradient; with the learned one the
    # pathwise part carries most of it (K=2, MH: 0.0052 of 0.0071), too little left to ablate.
    if reverse_model == "fixed":
        assert abs(ablated - exact) > 10 * ablated_se
        assert abs(ablated) <= 4 * ablated_se


@pytest.mark.parametrize(
    ("reverse_model", "wrt"),
    [("learned", "reverse_logits"), ("conditional", "reverse_net.0.bias")],
)
@pytest.mark.parametrize("acceptance", ACCEPTANCE_RULES)
def test_reverse_model_gradient_is_unbiased(acceptance, reverse_model, wrt):
    """A learned reverse model enters the bound only through its log-probability of the
    outcomes drawn, so its gradient is pathwise: the guide's Monte Carlo gradient of the
    four logits (or of the conditional network's hidden biases, through ``z_K``) matches
    autograd through the enumeration."""
    guide = _case(1, acceptance, reverse_model).guide
    exact = _exact_bound_gradient(guide, acceptance, GRADIENT_GRID_POINTS, wrt)
    pyro.set_rng_seed(450)
    gradients = _mc_gradients(guide, GRADIENT_BATCHES, wrt)
    estimate = gradients.mean(0)
    se = gradients.std(0) / math.sqrt(GRADIENT_BATCHES)
    print(f"{acceptance}: exact {exact.tolist()}\n  MC {estimate.tolist()} +- {se.tolist()}")
    assert (exact.abs() > 10 * se).any()  # far from its optimum: the check has power
    assert ((estimate - exact).abs() <= 4 * se).all()


@pytest.mark.parametrize("acceptance", ACCEPTANCE_RULES)
def test_learned_reverse_model_starts_at_the_fixed_one(acceptance):
    """At its initial logits the learned reverse model is ``P(v) / 2``: the bound is the
    fixed model's, and the optimal logits (the outcome frequencies) only tighten it."""
    fixed = _case(1, acceptance, "fixed").guide
    learned = AutoMetFlow(mixture_model, K=1, acceptance=acceptance, init_scale=1.0)
    learned()
    learned.load_state_dict(fixed.state_dict(), strict=False)
    with torch.no_grad():
        learned.reverse_logits.copy_(fixed_reverse_logits(DIRECTION_LOGIT, 1))
        start = _exact_bound(learned, acceptance)
        frequencies = _outcome_frequencies(learned, acceptance)
        learned.reverse_logits.copy_(frequencies.log().unsqueeze(0))
        optimum = _exact_bound(learned, acceptance)
    assert start == pytest.approx(_exact_bound(fixed, acceptance), abs=1e-10)
    # The reverse term is E[log r(outcome)]: moving r from P(v) / 2 to the frequencies f
    # gains KL(f || P(v) / 2), which is positive.
    gain = float(
        (frequencies * (frequencies.log() - fixed_reverse_logits(DIRECTION_LOGIT, 1))).sum()
    )
    print(f"{acceptance}: frequencies {frequencies.tolist()}, gain {gain:.6f}")
    assert gain > 0.01
    assert optimum - start == pytest.approx(gain, abs=1e-6)
    assert optimum < 0


@pytest.mark.parametrize("acceptance", ACCEPTANCE_RULES)
def test_conditional_reverse_model_starts_at_the_fixed_one(acceptance):
    """The conditional reverse network starts at ``P(v) / 2`` whatever ``z_K``: the guide's
    bound is then exactly the fixed model's (K = 2)."""
    fixed = _case(2, acceptance, "fixed").guide
    conditional = AutoMetFlow(
        mixture_model,
        K=2,
        acceptance=acceptance,
        init_scale=1.0,
        reverse_model="conditional",
        init_direction_prob=1 / (1 + math.exp(-DIRECTION_LOGIT)),
    )
    conditional()
    conditional.load_state_dict(fixed.state_dict(), strict=False)
    with torch.no_grad():
        assert _exact_bound(conditional, acceptance) == pytest.approx(
            _exact_bound(fixed, acceptance), abs=1e-9
        )


@pytest.mark.parametrize("acceptance", ACCEPTANCE_RULES)
def test_one_particle_baseline_keeps_the_gradient_unbiased(acceptance, monkeypatch):
    """With one particle there is no other draw to leave out: the baseline is the chain's
    reference alone (none for MetFlow, so zero); forcing that on every vectorised particle
    checks the one-particle estimator, which the leave-one-out test above does not reach."""
    guide = _case(1, acceptance).guide
    exact = float(_exact_bound_gradient(guide, acceptance, GRADIENT_GRID_POINTS))
    used = []

    def reference_only(elbo, reference=None):
        used.append(reference)
        return torch.zeros_like(elbo) if reference is None else reference.detach()

    monkeypatch.setattr(score_module, "leave_one_out_baseline", reference_only)
    pyro.set_rng_seed(500)
    estimate, se = _mean_se(_mc_gradients(guide, GRADIENT_BATCHES))
    print(f"{acceptance}: dL/dlogit exact {exact:.5f}, one-particle MC {estimate:.5f} +- {se:.5f}")
    assert used and used[0] is None
    assert abs(estimate - exact) <= 4 * se


@pytest.mark.parametrize("acceptance", ACCEPTANCE_RULES)
def test_exact_bound_gradient_matches_finite_difference(acceptance):
    guide = _case(1, acceptance).guide
    logit = guide.direction_logit
    gradient = float(_exact_bound_gradient(guide, acceptance))
    step = 1e-6
    values = []
    with torch.no_grad():
        for sign in (1, -1):
            logit.fill_(DIRECTION_LOGIT + sign * step)
            values.append(_exact_bound(guide, acceptance))
        logit.fill_(DIRECTION_LOGIT)
    finite_difference = (values[0] - values[1]) / (2 * step)
    print(f"{acceptance}: autograd {gradient:.10f}, central FD {finite_difference:.10f}")
    assert finite_difference == pytest.approx(gradient, rel=1e-6)
