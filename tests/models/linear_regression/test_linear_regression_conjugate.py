"""Known noise: the conjugate posterior and evidence, KL divergences and the mean-field optimum,
and the predictive intervals, each checked by an independent route (Chib's identity, dense
Gaussians from torch.distributions, Monte Carlo)."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from linear_regression_checks import F64, NOISE, NUM_DRAWS, design, scalar, within_mc_error

from pyroext.models import linear_regression as lr

# Known noise (a): conjugate posterior and evidence.


def test_conjugate_evidence_satisfies_chib_identity(data):
    x, y = data
    phi = design(x)
    post = lr.conjugate_posterior(x, y, noise_scale=NOISE, prior_precision=1.0)
    evidence = lr.log_evidence_known_noise(x, y, noise_scale=NOISE, prior_precision=1.0)
    generator = torch.Generator().manual_seed(7)
    far = torch.randn(phi.shape[1], generator=generator, dtype=F64)
    for theta in (post.mean + 0.05, far):
        log_lik = dist.Normal(phi @ theta, NOISE).log_prob(y).sum()
        log_prior = dist.Normal(scalar(0.0), 1.0).log_prob(theta).sum()
        log_post = dist.MultivariateNormal(post.mean, precision_matrix=post.precision)
        chib = log_lik + log_prior - log_post.log_prob(theta)
        assert float(chib) == pytest.approx(evidence, abs=1e-8)


def test_conjugate_mean_solves_regularised_normal_equations(data):
    x, y = data
    phi, prior_precision = design(x), 2.5
    post = lr.conjugate_posterior(x, y, noise_scale=NOISE, prior_precision=prior_precision)
    # Ridge regression as an augmented least-squares problem, solved by QR inside lstsq.
    eye = torch.eye(phi.shape[1], dtype=F64)
    stacked = torch.cat([phi / NOISE, math.sqrt(prior_precision) * eye])
    target = torch.cat([y / NOISE, torch.zeros(phi.shape[1], dtype=F64)])
    ridge = torch.linalg.lstsq(stacked, target[:, None]).solution[:, 0]
    torch.testing.assert_close(post.mean, ridge, rtol=0, atol=1e-10)
    torch.testing.assert_close(post.precision, phi.T @ phi / NOISE**2 + prior_precision * eye)
    torch.testing.assert_close(post.cov @ post.precision, eye, rtol=0, atol=1e-10)


def test_conjugate_evidence_equals_marginal_gaussian(data):
    x, y = data
    phi, prior_precision = design(x), 1.0
    cov = NOISE**2 * torch.eye(len(y), dtype=F64) + phi @ phi.T / prior_precision
    marginal = dist.MultivariateNormal(torch.zeros_like(y), cov).log_prob(y)
    evidence = lr.log_evidence_known_noise(
        x, y, noise_scale=NOISE, prior_precision=prior_precision
    )
    assert evidence == pytest.approx(float(marginal), abs=1e-8)


def test_diabetes_known_noise_reference_values(diabetes):
    x, y = diabetes
    evidence = lr.log_evidence_known_noise(x, y, noise_scale=NOISE, prior_precision=1.0)
    assert evidence == pytest.approx(-499.987428314, abs=1e-6)
    post = lr.conjugate_posterior(x, y, noise_scale=NOISE, prior_precision=1.0)
    assert post.mean.dtype == F64 and post.mean.shape == (11,)
    assert float(post.mean[-1]) == pytest.approx(0.0, abs=1e-12)  # centred target and features


# KL divergence and the mean-field optimum.


def test_kl_gaussian_is_zero_for_identical_gaussians(diabetes):
    post = lr.conjugate_posterior(*diabetes, noise_scale=NOISE, prior_precision=1.0)
    assert lr.kl_gaussian(post.mean, post.cov, post.mean, post.cov) == pytest.approx(0, abs=1e-10)


def test_kl_gaussian_matches_monte_carlo():
    generator = torch.Generator().manual_seed(3)
    factors = torch.randn(2, 4, 4, generator=generator, dtype=F64)
    covs = factors @ factors.mT + 0.5 * torch.eye(4, dtype=F64)
    means = torch.randn(2, 4, generator=generator, dtype=F64)
    q = dist.MultivariateNormal(means[0], covs[0])
    p = dist.MultivariateNormal(means[1], covs[1])
    draws = q.sample((NUM_DRAWS,))
    log_ratio = q.log_prob(draws) - p.log_prob(draws)
    exact = lr.kl_gaussian(means[0], covs[0], means[1], covs[1])
    assert exact > 0.5
    se = log_ratio.std() / math.sqrt(NUM_DRAWS)
    assert within_mc_error(log_ratio.mean(), scalar(exact), se)


def test_mean_field_optimum_beats_perturbations(diabetes):
    post = lr.conjugate_posterior(*diabetes, noise_scale=NOISE, prior_precision=1.0)
    optimum = lr.mean_field_optimum(post)
    best = lr.kl_gaussian(optimum.mean, optimum.cov, post.mean, post.cov)
    # Independent closed form: KL = (sum log Lambda_ii - log |Lambda|) / 2.
    hadamard_gap = post.precision.diagonal().log().sum() - torch.logdet(post.precision)
    assert best == pytest.approx(float(hadamard_gap) / 2, abs=1e-10)
    assert best > 0.1  # correlated features: the floor for mean-field guides is not trivial
    generator = torch.Generator().manual_seed(5)
    variances = optimum.cov.diagonal()
    for _ in range(20):
        signs = torch.randint(0, 2, variances.shape, generator=generator).to(F64) * 2 - 1
        perturbed = torch.diag(variances * (1 + 0.05 * signs))
        assert lr.kl_gaussian(optimum.mean, perturbed, post.mean, post.cov) > best
    shifted = optimum.mean + 0.01 * torch.randn(variances.shape, generator=generator, dtype=F64)
    assert lr.kl_gaussian(shifted, optimum.cov, post.mean, post.cov) > best


# Predictive intervals.


def test_exact_predictive_interval_matches_draws(synthetic):
    x, y = synthetic
    post = lr.conjugate_posterior(x, y, noise_scale=NOISE, prior_precision=1.0)
    x_new = torch.randn(5, 3, generator=torch.Generator().manual_seed(2), dtype=F64) * 2
    mean, lower, upper = lr.predictive_interval_known_noise(post, x_new, noise_scale=NOISE)
    theta = dist.MultivariateNormal(post.mean, post.cov).sample((NUM_DRAWS,))
    draws = dist.Normal(theta @ design(x_new).T, NOISE).sample()
    assert within_mc_error(mean, draws.mean(0), draws.std(0) / math.sqrt(NUM_DRAWS))
    coverage = ((draws >= lower) & (draws <= upper)).to(F64).mean(0)
    se = scalar(math.sqrt(0.9 * 0.1 / NUM_DRAWS))
    assert within_mc_error(coverage, scalar(0.9), se)
    below = (draws < lower).to(F64).mean(0)
    assert within_mc_error(below, scalar(0.05), scalar(math.sqrt(0.05 * 0.95 / NUM_DRAWS)))


def test_posterior_predictive_from_exact_guide_matches_exact_interval(synthetic):
    x, y = synthetic
    post = lr.conjugate_posterior(x, y, noise_scale=NOISE, prior_precision=1.0)
    exact = dist.MultivariateNormal(post.mean, post.cov)  # built once: one Cholesky

    def exact_guide(x, y=None, **kwargs):
        theta = pyro.sample("theta", exact, infer={"is_auxiliary": True})
        pyro.sample("w", dist.Delta(theta[:-1]).to_event(1))
        pyro.sample("b", dist.Delta(theta[-1]))

    x_new = torch.randn(4, 3, generator=torch.Generator().manual_seed(4), dtype=F64)
    num = 1000
    got = lr.posterior_predictive(
        lr.model_known_noise, exact_guide, x_new, num_samples=num, prob=0.8, noise_scale=NOISE
    )
    mean, lower, upper = lr.predictive_interval_known_noise(
        post, x_new, noise_scale=NOISE, prob=0.8
    )
    z = 1.2815515655446004  # standard normal 90% quantile, the upper end of the 80% interval
    sd = (upper - mean) / z
    assert within_mc_error(got[0], mean, sd / math.sqrt(num))
    # Standard error of a sample quantile: sqrt(q (1 - q) / n) / density at the quantile.
    density = math.exp(-(z**2) / 2) / math.sqrt(2 * math.pi) / sd
    quantile_se = math.sqrt(0.1 * 0.9 / num) / density
    assert within_mc_error(got[1], lower, quantile_se)
    assert within_mc_error(got[2], upper, quantile_se)
