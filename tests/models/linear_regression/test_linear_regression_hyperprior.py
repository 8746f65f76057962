"""Hyperprior on the weights' precision: the variational Bayes bound and the evidence, against
importance sampling, Monte Carlo and quadrature over dense Gaussians."""

import math

import pyro.distributions as dist
import pytest
import torch
from linear_regression_checks import (
    F64,
    NOISE,
    NUM_DRAWS,
    design,
    log_integral_over_log_scale,
    scalar,
    within_mc_error,
)

from pyroext.models import linear_regression as lr

# Hyperprior (b): variational Bayes and the evidence by quadrature.


def test_vb_bound_increases_converges_and_stays_below_evidence(data):
    x, y = data
    result = lr.vb_hyperprior(x, y, noise_scale=NOISE, a0=1.0, b0=1.0)
    steps = result.elbos.diff()
    assert len(result.elbos) < 500 and abs(float(steps[-1])) < 1e-10
    assert bool((steps >= -1e-10).all())
    evidence = lr.log_evidence_hyperprior(x, y, noise_scale=NOISE, a0=1.0, b0=1.0)
    assert float(result.elbos[-1]) <= evidence
    # Fixed point of the updates: q(alpha) matches q(theta) and vice versa.
    mean, cov = result.posterior.mean, result.posterior.cov
    num_params = x.shape[1] + 1
    assert float(result.a_n) == 1.0 + num_params / 2
    assert float(result.b_n) == pytest.approx(1.0 + float(mean @ mean + cov.trace()) / 2)
    phi = design(x)
    expected = phi.T @ phi / NOISE**2 + result.a_n / result.b_n * torch.eye(num_params, dtype=F64)
    torch.testing.assert_close(result.posterior.precision, expected, rtol=1e-7, atol=0)


def test_diabetes_vb_and_hyperprior_reference_values(diabetes):
    result = lr.vb_hyperprior(*diabetes, noise_scale=NOISE, a0=1.0, b0=1.0)
    evidence = lr.log_evidence_hyperprior(*diabetes, noise_scale=NOISE, a0=1.0, b0=1.0)
    assert float(result.elbos[-1]) == pytest.approx(-495.806502, abs=1e-5)
    assert evidence == pytest.approx(-495.775160, abs=1e-5)


def _log_joint_hyperprior(phi, y, theta, alpha, a0, b0):
    log_lik = dist.Normal(theta @ phi.T, NOISE).log_prob(y).sum(-1)
    log_prior = dist.Normal(scalar(0.0), alpha.rsqrt()[:, None]).log_prob(theta).sum(-1)
    return log_lik + log_prior + dist.Gamma(scalar(a0), scalar(b0)).log_prob(alpha)


def _vb_log_weights(x, y, result, a0, b0):
    """log p(y, theta, alpha) - log q(theta) - log q(alpha) at draws from q."""
    q_alpha = dist.Gamma(result.a_n, result.b_n)
    q_theta = dist.MultivariateNormal(result.posterior.mean, result.posterior.cov)
    alpha, theta = q_alpha.sample((NUM_DRAWS,)), q_theta.sample((NUM_DRAWS,))
    log_joint = _log_joint_hyperprior(design(x), y, theta, alpha, a0, b0)
    return log_joint - q_theta.log_prob(theta) - q_alpha.log_prob(alpha)


def test_vb_closed_form_bound_matches_monte_carlo(synthetic):
    x, y = synthetic
    result = lr.vb_hyperprior(x, y, noise_scale=NOISE, a0=2.0, b0=0.5)
    log_weights = _vb_log_weights(x, y, result, 2.0, 0.5)
    se = log_weights.std() / math.sqrt(NUM_DRAWS)
    assert within_mc_error(log_weights.mean(), result.elbos[-1], se)


def test_hyperprior_evidence_matches_importance_sampling(synthetic):
    x, y = synthetic
    result = lr.vb_hyperprior(x, y, noise_scale=NOISE, a0=1.0, b0=1.0)
    log_weights = _vb_log_weights(x, y, result, 1.0, 1.0)
    estimate = torch.logsumexp(log_weights, 0) - math.log(NUM_DRAWS)
    weights = (log_weights - log_weights.max()).exp()
    se = weights.std() / weights.mean() / math.sqrt(NUM_DRAWS)  # delta method for the log
    evidence = lr.log_evidence_hyperprior(x, y, noise_scale=NOISE, a0=1.0, b0=1.0)
    assert within_mc_error(estimate, scalar(evidence), se)
    assert float(se) < 1e-3


def test_hyperprior_evidence_matches_dense_quadrature(synthetic):
    x, y = synthetic
    phi, eye = design(x), torch.eye(len(y), dtype=F64)
    a0, b0 = 3.0, 2.0
    evidence = lr.log_evidence_hyperprior(x, y, noise_scale=NOISE, a0=a0, b0=b0)

    def log_joint(alpha: torch.Tensor) -> torch.Tensor:
        cov = NOISE**2 * eye + phi @ phi.T / alpha[:, None, None]
        log_lik = dist.MultivariateNormal(torch.zeros_like(y), cov).log_prob(y)
        return log_lik + dist.Gamma(scalar(a0), scalar(b0)).log_prob(alpha)

    # Dense N x N covariances and a plain trapezoid grid: a second route to the same integral.
    assert log_integral_over_log_scale(log_joint, math.log(a0 / b0)) == pytest.approx(
        evidence, abs=1e-8
    )


def test_hyperprior_evidence_tends_to_known_noise_as_prior_concentrates(synthetic):
    x, y = synthetic
    known = lr.log_evidence_known_noise(*synthetic, noise_scale=NOISE, prior_precision=2.0)
    gaps = [
        abs(lr.log_evidence_hyperprior(x, y, noise_scale=NOISE, a0=2 * rate, b0=rate) - known)
        for rate in (1e2, 1e4, 1e6)
    ]
    # Var(alpha) = 2 / rate, and the gap shrinks in proportion.
    assert gaps[0] > 1e-3
    assert gaps[1] == pytest.approx(gaps[0] / 100, rel=0.05)
    assert gaps[2] == pytest.approx(gaps[1] / 100, rel=0.05)
