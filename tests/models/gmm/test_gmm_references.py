"""Exact GMM references: EM against known parameters and scikit-learn, VB against Monte Carlo.

The key exactness check is :func:`test_vb_bound_matches_monte_carlo`: the closed-form lower bound
of PRML eqs. 10.70-10.77 against an independent Monte Carlo estimate of
``E_q[log p(X, Z, pi, mu, Lambda) - log q(Z, pi, mu, Lambda)]`` built from torch.distributions.
"""

import math

import pytest
import torch
import torch.distributions as td
from sklearn.mixture import GaussianMixture

from pyroext.data import (
    SYNTHETIC_COVARIANCES,
    SYNTHETIC_MEANS,
    SYNTHETIC_WEIGHTS,
    load_faithful,
    synthetic_mixture,
)
from pyroext.models.gmm import em as gmm_em
from pyroext.models.gmm import vb as gmm_vb

F64 = torch.float64
N = 2000
TRUE_WEIGHTS = torch.tensor(SYNTHETIC_WEIGHTS, dtype=F64)
TRUE_MEANS = torch.tensor(SYNTHETIC_MEANS, dtype=F64)
TRUE_COVS = torch.tensor(SYNTHETIC_COVARIANCES, dtype=F64)


def _assert_non_decreasing(history: torch.Tensor) -> None:
    steps = history[1:] - history[:-1]
    slack = 1e-9 * history[1:].abs().clamp_min(1.0)
    assert bool((steps >= -slack).all()), f"objective decreased by {float(-steps.min())}"


def _sorted(means: torch.Tensor, *others: torch.Tensor) -> tuple[torch.Tensor, ...]:
    order = means[:, 0].argsort()
    return (means[order], *(o[order] for o in others))


def _sklearn(x: torch.Tensor, k: int) -> GaussianMixture:
    return GaussianMixture(
        k,
        covariance_type="full",
        tol=1e-10,
        max_iter=1000,
        n_init=5,
        reg_covar=1e-6,
        random_state=0,
    ).fit(x.numpy())


@pytest.fixture(scope="module")
def synthetic() -> torch.Tensor:
    return synthetic_mixture(N, dtype=F64).x


@pytest.fixture(scope="module")
def em_fit(synthetic: torch.Tensor) -> gmm_em.EMResult:
    return gmm_em.em(synthetic, 3)


def test_em_history_non_decreasing(em_fit: gmm_em.EMResult) -> None:
    _assert_non_decreasing(em_fit.history)
    assert em_fit.history.shape == (em_fit.iterations + 1,)
    assert em_fit.history[-1].item() == pytest.approx(em_fit.log_likelihood, abs=0.0)
    assert torch.allclose(em_fit.responsibilities.sum(1), torch.ones(N, dtype=F64))


def test_em_recovers_known_parameters(em_fit: gmm_em.EMResult) -> None:
    means, weights, covs = _sorted(em_fit.means, em_fit.weights, em_fit.covariances)
    counts = weights * N
    se = (TRUE_COVS.diagonal(dim1=1, dim2=2) / counts.unsqueeze(1)).sqrt()
    assert bool(((means - TRUE_MEANS).abs() < 3 * se).all()), (means - TRUE_MEANS) / se
    assert bool(((weights - TRUE_WEIGHTS).abs() < 0.03).all())
    assert torch.allclose(covs, TRUE_COVS, atol=0.15)


def test_em_random_init_agrees(synthetic: torch.Tensor, em_fit: gmm_em.EMResult) -> None:
    fit = gmm_em.em(synthetic, 3, init="random", seed=1)
    assert fit.log_likelihood == pytest.approx(em_fit.log_likelihood, rel=1e-9)


def test_em_matches_sklearn(synthetic: torch.Tensor, em_fit: gmm_em.EMResult) -> None:
    sk = _sklearn(synthetic, 3)
    assert abs(em_fit.log_likelihood / N - sk.score(synthetic.numpy())) < 1e-6
    (ours,) = _sorted(em_fit.means)
    (theirs,) = _sorted(torch.as_tensor(sk.means_))
    assert torch.allclose(ours, theirs, atol=1e-4, rtol=0.0)


def test_em_old_faithful_matches_sklearn() -> None:
    x = load_faithful(standardize=True, dtype=F64).x
    fit = gmm_em.em(x, 2)
    _assert_non_decreasing(fit.history)
    sk_loglik = _sklearn(x, 2).score(x.numpy()) * x.shape[0]
    assert fit.log_likelihood == pytest.approx(sk_loglik, rel=1e-6)
    assert fit.log_likelihood == pytest.approx(-385.4606956, abs=1e-6)


def test_map_em_non_decreasing(synthetic: torch.Tensor) -> None:
    prior = gmm_em.GMMPrior(dirichlet_concentration=50.0, mean_loc=0.0, mean_scale=0.3)
    fit = gmm_em.em(synthetic, 3, prior=prior)
    _assert_non_decreasing(fit.history)
    # A strong prior pulls the means towards 0 and the weights towards 1/3.
    (means,) = _sorted(fit.means)
    assert bool((means.norm(dim=1) < TRUE_MEANS.norm(dim=1)).all())
    assert fit.log_likelihood < fit.history[-1].item() + 1e6  # finite and reported separately


def test_map_em_weak_prior_approaches_ml(synthetic: torch.Tensor, em_fit: gmm_em.EMResult) -> None:
    prior = gmm_em.GMMPrior(dirichlet_concentration=1.0, mean_loc=torch.zeros(2), mean_scale=1e4)
    fit = gmm_em.em(synthetic, 3, prior=prior)
    _assert_non_decreasing(fit.history)
    assert fit.log_likelihood == pytest.approx(em_fit.log_likelihood, rel=1e-9)
    ours, theirs = _sorted(fit.means)[0], _sorted(em_fit.means)[0]
    assert torch.allclose(ours, theirs, atol=1e-5, rtol=0.0)


def test_vb_matches_em(synthetic: torch.Tensor, em_fit: gmm_em.EMResult) -> None:
    fit = gmm_vb.vb_gmm(synthetic, 3)
    _assert_non_decreasing(fit.history)
    assert fit.elbo == fit.history[-1].item()
    m, alpha = _sorted(fit.m, fit.alpha)
    means, weights = _sorted(em_fit.means, em_fit.weights)
    assert torch.allclose(m, means, atol=0.05, rtol=0.0)
    assert torch.allclose(alpha / alpha.sum(), weights, atol=0.02, rtol=0.0)
    assert fit.elbo < em_fit.log_likelihood


def _mc_bound(x: torch.Tensor, fit: gmm_vb.VBResult, hyper: dict, draws: int) -> torch.Tensor:
    """Per-draw ``log p(X, Z, pi, mu, Lambda) - log q(Z, pi, mu, Lambda)``, shape ``(draws,)``."""
    alpha0, beta0, m0, w0, nu0 = (hyper[n] for n in ("alpha0", "beta0", "m0", "w0", "nu0"))
    k = fit.alpha.shape[0]
    q_pi, q_lam = td.Dirichlet(fit.alpha), td.Wishart(fit.nu, covariance_matrix=fit.w)
    q_z = td.Categorical(probs=fit.responsibilities)
    pi, lam, z = q_pi.sample((draws,)), q_lam.sample((draws,)), q_z.sample((draws,))
    q_mu = td.MultivariateNormal(fit.m, precision_matrix=fit.beta[:, None, None] * lam)
    mu = q_mu.sample()
    p_mu = td.MultivariateNormal(m0, precision_matrix=beta0 * lam)
    p_lam = td.Wishart(torch.tensor(nu0, dtype=F64), covariance_matrix=w0)
    p_pi = td.Dirichlet(torch.full((k,), alpha0, dtype=F64))
    lik = td.MultivariateNormal(mu[:, None], precision_matrix=lam[:, None]).log_prob(x[:, None])
    log_joint = (
        (pi.log().gather(1, z) + lik.gather(2, z.unsqueeze(2)).squeeze(2)).sum(1)
        + p_pi.log_prob(pi)
        + (p_mu.log_prob(mu) + p_lam.log_prob(lam)).sum(1)
    )
    log_q = (
        q_z.log_prob(z).sum(1)
        + q_pi.log_prob(pi)
        + (q_mu.log_prob(mu) + q_lam.log_prob(lam)).sum(1)
    )
    return log_joint - log_q


@pytest.mark.filterwarnings("ignore:Singular sample detected")
@pytest.mark.parametrize("max_iter", [2, 1000])
def test_vb_bound_matches_monte_carlo(max_iter: int) -> None:
    generator = torch.Generator().manual_seed(7)
    x = torch.randn(20, 2, generator=generator, dtype=F64)
    x[:10] += torch.tensor([3.0, 1.0], dtype=F64)
    hyper = {
        "alpha0": 0.7,
        "beta0": 0.5,
        "m0": torch.tensor([0.5, -0.2], dtype=F64),
        "w0": torch.tensor([[0.8, 0.2], [0.2, 0.5]], dtype=F64),
        "nu0": 3.0,
    }
    fit = gmm_vb.vb_gmm(x, 2, max_iter=max_iter, **hyper)
    _assert_non_decreasing(fit.history)
    closed = gmm_vb.vb_lower_bound(x, fit.responsibilities, fit.factors, gmm_vb.VBPrior(**hyper))
    assert closed == fit.elbo
    torch.manual_seed(2024)
    values = _mc_bound(x, fit, hyper, 20_000)
    estimate, mcse = values.mean().item(), values.std().item() / math.sqrt(values.numel())
    assert abs(estimate - closed) < 4 * mcse, (estimate, closed, mcse)


@pytest.mark.parametrize(
    ("x", "k", "match"),
    [
        (torch.zeros(5, 2), 0, r"k=0 must be an integer in \[1, N\] = \[1, 5\]"),
        (torch.zeros(5, 2), 6, r"k=6 must be an integer in \[1, N\] = \[1, 5\]"),
        (torch.tensor([[0.0, 1.0], [float("nan"), 2.0]]), 1, "x must contain only finite"),
        (torch.tensor([[0.0, float("inf")], [1.0, 2.0]]), 1, "x must contain only finite"),
        (torch.zeros(5), 1, r"x must be a 2-D tensor of shape \(N, D\), got shape \(5,\)"),
    ],
)
def test_bad_input_raises(x: torch.Tensor, k: int, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        gmm_em.check_gmm_data(x, k)
    with pytest.raises(ValueError, match=match):
        gmm_em.em(x, k)
    with pytest.raises(ValueError, match=match):
        gmm_vb.vb_gmm(x, k)


def test_bad_settings_raise() -> None:
    x = torch.randn(10, 2, dtype=F64)
    with pytest.raises(ValueError, match="dirichlet_concentration=0.5 must be >= 1"):
        gmm_em.em(x, 2, prior=gmm_em.GMMPrior(0.5, 0.0, 1.0))
    with pytest.raises(ValueError, match=r"m0 must have shape \(D,\) = \(2,\), got \(3,\)"):
        gmm_vb.vb_gmm(x, 2, m0=torch.zeros(3, dtype=F64))
    with pytest.raises(ValueError, match="nu0=0.5 must be > D - 1 = 1"):
        gmm_vb.vb_gmm(x, 2, nu0=0.5)
    with pytest.raises(ValueError, match="alpha0=0.0 must be a finite number > 0"):
        gmm_vb.vb_gmm(x, 2, alpha0=0.0)
