"""Unknown noise: the Normal-Gamma posterior, its evidence by Chib's identity and its Student-t
marginal against draws and quadrature."""

import math

import pyro.distributions as dist
import pytest
import torch
from linear_regression_checks import (
    F64,
    NUM_DRAWS,
    design,
    log_integral_over_log_scale,
    scalar,
    within_mc_error,
)

from pyroext.models import linear_regression as lr

# Unknown noise (c): Normal-Gamma posterior.

NG_PRIOR = {"prior_precision": 0.5, "a0": 2.0, "b0": 1.5}


def test_normal_gamma_evidence_satisfies_chib_identity(data):
    x, y = data
    phi, lam, a0, b0 = design(x), *NG_PRIOR.values()
    post = lr.normal_gamma_posterior(x, y, **NG_PRIOR)
    evidence = lr.log_evidence_unknown_noise(x, y, **NG_PRIOR)
    generator = torch.Generator().manual_seed(11)
    far = torch.randn(phi.shape[1], generator=generator, dtype=F64)
    for theta, tau in ((post.mean + 0.03, post.a_n / post.b_n), (far, scalar(0.3))):
        log_lik = dist.Normal(phi @ theta, tau.rsqrt()).log_prob(y).sum()
        theta_prior = dist.Normal(scalar(0.0), (tau * lam).rsqrt()).log_prob(theta).sum()
        log_prior = theta_prior + dist.Gamma(scalar(a0), scalar(b0)).log_prob(tau)
        log_post = dist.Gamma(post.a_n, post.b_n).log_prob(tau) + dist.MultivariateNormal(
            post.mean, precision_matrix=tau * post.precision
        ).log_prob(theta)
        assert float(log_lik + log_prior - log_post) == pytest.approx(evidence, abs=1e-8)


def test_student_t_marginal_matches_posterior_draws(synthetic):
    post = lr.normal_gamma_posterior(*synthetic, **NG_PRIOR)
    tau = dist.Gamma(post.a_n, post.b_n).sample((NUM_DRAWS,))
    theta = dist.MultivariateNormal(
        post.mean, precision_matrix=tau[:, None, None] * post.precision
    ).sample()
    assert within_mc_error(theta.mean(0), post.mean, theta.std(0) / math.sqrt(NUM_DRAWS))
    centred = theta - post.mean
    products = centred[:, :, None] * centred[:, None, :]
    se = products.std(0) / math.sqrt(NUM_DRAWS)
    assert within_mc_error(products.mean(0), post.covariance, se)
    marginal = post.marginal()
    assert float(marginal.df) == 2 * float(post.a_n)
    torch.testing.assert_close(marginal.variance, post.covariance.diagonal())


def test_student_t_density_integrates_the_noise_precision(synthetic):
    post = lr.normal_gamma_posterior(*synthetic, **NG_PRIOR)
    theta = post.mean + torch.tensor([0.1, -0.2, 0.05, 0.1], dtype=F64)
    log_density = float(post.marginal().log_prob(theta))

    def log_joint(tau: torch.Tensor) -> torch.Tensor:
        precision = tau[:, None, None] * post.precision
        conditional = dist.MultivariateNormal(post.mean, precision_matrix=precision)
        return conditional.log_prob(theta) + dist.Gamma(post.a_n, post.b_n).log_prob(tau)

    center = math.log(post.a_n / post.b_n)
    assert log_integral_over_log_scale(log_joint, center) == pytest.approx(log_density, abs=1e-8)


def test_normal_gamma_scale_matrix_and_covariance_are_consistent(synthetic):
    post = lr.normal_gamma_posterior(*synthetic, **NG_PRIOR)
    ratio = post.a_n / (post.a_n - 1)  # Student-t: cov = df / (df - 2) * scale
    torch.testing.assert_close(post.covariance, ratio * post.scale_matrix)
    with pytest.raises(ValueError, match="a_n"):
        _ = post._replace(a_n=scalar(1.0)).covariance
