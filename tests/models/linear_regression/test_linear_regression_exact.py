"""Exact references of the Bayesian linear regression zoo, each checked by an independent route.

Evidences are checked with Chib's identity and dense Gaussians built from torch.distributions,
closed-form bounds and divergences against Monte Carlo, and the Pyro models against hand-written
log joints.
"""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import Predictive, Trace_ELBO
from pyro.infer.autoguide import AutoMultivariateNormal
from pyro.poutine.util import site_is_subsample
from sklearn.datasets import load_diabetes

from pyroext.models import linear_regression as lr

F64 = torch.float64
NOISE = 0.7
NUM_DRAWS = 200_000


def _standardize(values: torch.Tensor) -> torch.Tensor:
    # Population sd (divide by N), as pyroext.data.load_diabetes does.
    return (values - values.mean(0)) / values.std(0, correction=0)


def _design(x: torch.Tensor) -> torch.Tensor:
    return torch.cat([x, torch.ones(x.shape[0], 1, dtype=x.dtype)], dim=1)


def _t(value: float) -> torch.Tensor:
    return torch.tensor(value, dtype=F64)


def _log_integral_over_log_scale(log_f, center: float, half_width: float = 20.0) -> float:
    """log int_0^inf exp(log_f(s)) ds by the trapezoid rule on a grid in log s.

    For a smooth integrand that vanishes at both ends of the grid the rule converges
    exponentially fast in the number of points.
    """
    log_s = torch.linspace(center - half_width, center + half_width, 2001, dtype=F64)
    log_values = log_f(log_s.exp()) + log_s  # ds = s d(log s)
    top = log_values.max()
    return float(top + torch.trapezoid((log_values - top).exp(), log_s).log())


def _within_mc_error(estimate: torch.Tensor, exact: torch.Tensor, se: torch.Tensor) -> bool:
    return bool(((estimate - exact).abs() <= 4 * se).all())


@pytest.fixture(scope="module")
def synthetic() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1234)
    x = torch.randn(50, 3, generator=generator, dtype=F64)
    w = torch.tensor([1.0, -0.5, 0.25], dtype=F64)
    y = x @ w + 0.3 + NOISE * torch.randn(50, generator=generator, dtype=F64)
    return x, y


@pytest.fixture(scope="module")
def diabetes() -> tuple[torch.Tensor, torch.Tensor]:
    features, target = load_diabetes(return_X_y=True)
    x = _standardize(torch.as_tensor(features, dtype=F64))
    y = _standardize(torch.as_tensor(target, dtype=F64))
    return x, y


@pytest.fixture(params=["synthetic", "diabetes"])
def data(request: pytest.FixtureRequest) -> tuple[torch.Tensor, torch.Tensor]:
    return request.getfixturevalue(request.param)


# Known noise (a): conjugate posterior and evidence.


def test_conjugate_evidence_satisfies_chib_identity(data):
    x, y = data
    phi = _design(x)
    post = lr.conjugate_posterior(x, y, noise_scale=NOISE, prior_precision=1.0)
    evidence = lr.log_evidence_known_noise(x, y, noise_scale=NOISE, prior_precision=1.0)
    generator = torch.Generator().manual_seed(7)
    far = torch.randn(phi.shape[1], generator=generator, dtype=F64)
    for theta in (post.mean + 0.05, far):
        log_lik = dist.Normal(phi @ theta, NOISE).log_prob(y).sum()
        log_prior = dist.Normal(_t(0.0), 1.0).log_prob(theta).sum()
        log_post = dist.MultivariateNormal(post.mean, precision_matrix=post.precision)
        chib = log_lik + log_prior - log_post.log_prob(theta)
        assert float(chib) == pytest.approx(evidence, abs=1e-8)


def test_conjugate_mean_solves_regularised_normal_equations(data):
    x, y = data
    phi, prior_precision = _design(x), 2.5
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
    phi, prior_precision = _design(x), 1.0
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
    assert _within_mc_error(log_ratio.mean(), _t(exact), se)


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
    phi = _design(x)
    expected = phi.T @ phi / NOISE**2 + result.a_n / result.b_n * torch.eye(num_params, dtype=F64)
    torch.testing.assert_close(result.posterior.precision, expected, rtol=1e-7, atol=0)


def test_diabetes_vb_and_hyperprior_reference_values(diabetes):
    result = lr.vb_hyperprior(*diabetes, noise_scale=NOISE, a0=1.0, b0=1.0)
    evidence = lr.log_evidence_hyperprior(*diabetes, noise_scale=NOISE, a0=1.0, b0=1.0)
    assert float(result.elbos[-1]) == pytest.approx(-495.806502, abs=1e-5)
    assert evidence == pytest.approx(-495.775160, abs=1e-5)


def _log_joint_hyperprior(phi, y, theta, alpha, a0, b0):
    log_lik = dist.Normal(theta @ phi.T, NOISE).log_prob(y).sum(-1)
    log_prior = dist.Normal(_t(0.0), alpha.rsqrt()[:, None]).log_prob(theta).sum(-1)
    return log_lik + log_prior + dist.Gamma(_t(a0), _t(b0)).log_prob(alpha)


def _vb_log_weights(x, y, result, a0, b0):
    """log p(y, theta, alpha) - log q(theta) - log q(alpha) at draws from q."""
    q_alpha = dist.Gamma(result.a_n, result.b_n)
    q_theta = dist.MultivariateNormal(result.posterior.mean, result.posterior.cov)
    alpha, theta = q_alpha.sample((NUM_DRAWS,)), q_theta.sample((NUM_DRAWS,))
    log_joint = _log_joint_hyperprior(_design(x), y, theta, alpha, a0, b0)
    return log_joint - q_theta.log_prob(theta) - q_alpha.log_prob(alpha)


def test_vb_closed_form_bound_matches_monte_carlo(synthetic):
    x, y = synthetic
    result = lr.vb_hyperprior(x, y, noise_scale=NOISE, a0=2.0, b0=0.5)
    log_weights = _vb_log_weights(x, y, result, 2.0, 0.5)
    se = log_weights.std() / math.sqrt(NUM_DRAWS)
    assert _within_mc_error(log_weights.mean(), result.elbos[-1], se)


def test_hyperprior_evidence_matches_importance_sampling(synthetic):
    x, y = synthetic
    result = lr.vb_hyperprior(x, y, noise_scale=NOISE, a0=1.0, b0=1.0)
    log_weights = _vb_log_weights(x, y, result, 1.0, 1.0)
    estimate = torch.logsumexp(log_weights, 0) - math.log(NUM_DRAWS)
    weights = (log_weights - log_weights.max()).exp()
    se = weights.std() / weights.mean() / math.sqrt(NUM_DRAWS)  # delta method for the log
    evidence = lr.log_evidence_hyperprior(x, y, noise_scale=NOISE, a0=1.0, b0=1.0)
    assert _within_mc_error(estimate, _t(evidence), se)
    assert float(se) < 1e-3


def test_hyperprior_evidence_matches_dense_quadrature(synthetic):
    x, y = synthetic
    phi, eye = _design(x), torch.eye(len(y), dtype=F64)
    a0, b0 = 3.0, 2.0
    evidence = lr.log_evidence_hyperprior(x, y, noise_scale=NOISE, a0=a0, b0=b0)

    def log_joint(alpha: torch.Tensor) -> torch.Tensor:
        cov = NOISE**2 * eye + phi @ phi.T / alpha[:, None, None]
        log_lik = dist.MultivariateNormal(torch.zeros_like(y), cov).log_prob(y)
        return log_lik + dist.Gamma(_t(a0), _t(b0)).log_prob(alpha)

    # Dense N x N covariances and a plain trapezoid grid: a second route to the same integral.
    assert _log_integral_over_log_scale(log_joint, math.log(a0 / b0)) == pytest.approx(
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


# Unknown noise (c): Normal-Gamma posterior.

NG_PRIOR = {"prior_precision": 0.5, "a0": 2.0, "b0": 1.5}


def test_normal_gamma_evidence_satisfies_chib_identity(data):
    x, y = data
    phi, lam, a0, b0 = _design(x), *NG_PRIOR.values()
    post = lr.normal_gamma_posterior(x, y, **NG_PRIOR)
    evidence = lr.log_evidence_unknown_noise(x, y, **NG_PRIOR)
    generator = torch.Generator().manual_seed(11)
    far = torch.randn(phi.shape[1], generator=generator, dtype=F64)
    for theta, tau in ((post.mean + 0.03, post.a_n / post.b_n), (far, _t(0.3))):
        log_lik = dist.Normal(phi @ theta, tau.rsqrt()).log_prob(y).sum()
        log_prior = dist.Normal(_t(0.0), (tau * lam).rsqrt()).log_prob(theta).sum() + dist.Gamma(
            _t(a0), _t(b0)
        ).log_prob(tau)
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
    assert _within_mc_error(theta.mean(0), post.mean, theta.std(0) / math.sqrt(NUM_DRAWS))
    centred = theta - post.mean
    products = centred[:, :, None] * centred[:, None, :]
    se = products.std(0) / math.sqrt(NUM_DRAWS)
    assert _within_mc_error(products.mean(0), post.covariance, se)
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
    assert _log_integral_over_log_scale(log_joint, center) == pytest.approx(log_density, abs=1e-8)


def test_normal_gamma_scale_matrix_and_covariance_are_consistent(synthetic):
    post = lr.normal_gamma_posterior(*synthetic, **NG_PRIOR)
    ratio = post.a_n / (post.a_n - 1)  # Student-t: cov = df / (df - 2) * scale
    torch.testing.assert_close(post.covariance, ratio * post.scale_matrix)
    with pytest.raises(ValueError, match="a_n"):
        _ = post._replace(a_n=_t(1.0)).covariance


# Predictive intervals.


def test_exact_predictive_interval_matches_draws(synthetic):
    x, y = synthetic
    post = lr.conjugate_posterior(x, y, noise_scale=NOISE, prior_precision=1.0)
    x_new = torch.randn(5, 3, generator=torch.Generator().manual_seed(2), dtype=F64) * 2
    mean, lower, upper = lr.predictive_interval_known_noise(post, x_new, noise_scale=NOISE)
    theta = dist.MultivariateNormal(post.mean, post.cov).sample((NUM_DRAWS,))
    draws = dist.Normal(theta @ _design(x_new).T, NOISE).sample()
    assert _within_mc_error(mean, draws.mean(0), draws.std(0) / math.sqrt(NUM_DRAWS))
    coverage = ((draws >= lower) & (draws <= upper)).to(F64).mean(0)
    se = _t(math.sqrt(0.9 * 0.1 / NUM_DRAWS))
    assert _within_mc_error(coverage, _t(0.9), se)
    below = (draws < lower).to(F64).mean(0)
    assert _within_mc_error(below, _t(0.05), _t(math.sqrt(0.05 * 0.95 / NUM_DRAWS)))


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
    assert _within_mc_error(got[0], mean, sd / math.sqrt(num))
    # Standard error of a sample quantile: sqrt(q (1 - q) / n) / density at the quantile.
    density = math.exp(-(z**2) / 2) / math.sqrt(2 * math.pi) / sd
    quantile_se = math.sqrt(0.1 * 0.9 / num) / density
    assert _within_mc_error(got[1], lower, quantile_se)
    assert _within_mc_error(got[2], upper, quantile_se)


# The Pyro models.

MODELS = {
    "known_noise": (lr.model_known_noise, {"noise_scale": NOISE, "prior_precision": 2.0}),
    "hyperprior": (lr.model_hyperprior, {"noise_scale": NOISE, "a0": 2.0, "b0": 3.0}),
    "unknown_noise": (lr.model_unknown_noise, {"prior_precision": 2.0, "a0": 2.0, "b0": 3.0}),
}
LATENTS = {"known_noise": [], "hyperprior": ["alpha"], "unknown_noise": ["tau"]}


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_model_sites_shapes_and_dtype(synthetic, name, dtype):
    model, kwargs = MODELS[name]
    x, y = (t.to(dtype) for t in synthetic)
    trace = poutine.trace(model).get_trace(x, y, **kwargs)
    sites = [
        n
        for n, site in trace.nodes.items()
        if site["type"] == "sample" and not site_is_subsample(site)
    ]
    assert sites == [*LATENTS[name], "w", "b", "obs"]
    (plate,) = trace.nodes["obs"]["cond_indep_stack"]
    assert (plate.name, plate.size, plate.dim) == ("data", 50, -1)
    assert trace.nodes["w"]["value"].shape == (3,)
    assert trace.nodes["b"]["value"].shape == ()
    assert trace.nodes["obs"]["is_observed"] and trace.nodes["obs"]["value"].shape == (50,)
    assert trace.nodes["_RETURN"]["value"].shape == (50,)
    assert all(trace.nodes[n]["value"].dtype == dtype for n in sites)
    prior_draw = poutine.trace(model).get_trace(x, **kwargs).nodes["obs"]
    assert not prior_draw["is_observed"] and prior_draw["value"].shape == (50,)


def _hand_log_joint(name, x, y, w, b, scale):
    kwargs = MODELS[name][1]
    prior_sd, noise = {
        "known_noise": (kwargs.get("prior_precision", 1) ** -0.5, NOISE),
        "hyperprior": (scale**-0.5, NOISE),
        "unknown_noise": ((scale * 2.0) ** -0.5, scale**-0.5),
    }[name]
    log_joint = dist.Normal(_t(0.0), prior_sd).log_prob(torch.cat([w, b[None]])).sum()
    log_joint += dist.Normal(x @ w + b, noise).log_prob(y).sum()
    if name != "known_noise":
        log_joint += dist.Gamma(_t(2.0), _t(3.0)).log_prob(_t(scale))
    return log_joint


@pytest.mark.parametrize("name", MODELS)
def test_model_log_joint_matches_hand_computation(synthetic, name):
    model, kwargs = MODELS[name]
    x, y = synthetic
    values = {"w": torch.tensor([0.3, -1.2, 0.7], dtype=F64), "b": _t(-0.4)}
    values |= {site: _t(1.7) for site in LATENTS[name]}
    trace = poutine.trace(poutine.condition(model, data=values)).get_trace(x, y, **kwargs)
    expected = _hand_log_joint(name, x, y, values["w"], values["b"], 1.7)
    assert float(trace.log_prob_sum()) == pytest.approx(float(expected), abs=1e-10)


@pytest.mark.parametrize("name", MODELS)
def test_models_vectorise_over_particles(synthetic, name):
    model, kwargs = MODELS[name]
    x, y = synthetic
    draws = Predictive(model, num_samples=7, parallel=True, return_sites=["obs"])(x, **kwargs)
    assert draws["obs"].shape == (7, 50)
    guide = AutoMultivariateNormal(model)
    loss = Trace_ELBO(num_particles=4, vectorize_particles=True).loss(model, guide, x, y, **kwargs)
    assert math.isfinite(loss)


@pytest.mark.parametrize("name", MODELS)
def test_models_follow_the_device_of_x(synthetic, name):
    # With "meta" as the default device, a constant not created on x's device breaks the trace.
    model, kwargs = MODELS[name]
    with torch.device("meta"):
        trace = poutine.trace(model).get_trace(*synthetic, **kwargs)
        log_joint = trace.log_prob_sum()
    assert log_joint.device == synthetic[0].device and math.isfinite(log_joint)


BAD_ARGUMENTS = [
    ("known_noise", {"noise_scale": 0.0}, "noise_scale"),
    ("known_noise", {"prior_precision": -1.0}, "prior_precision"),
    ("known_noise", {"noise_scale": math.inf}, "noise_scale"),
    ("hyperprior", {"a0": 0.0}, "a0"),
    ("hyperprior", {"b0": -2.0}, "b0"),
    ("hyperprior", {"noise_scale": -1.0}, "noise_scale"),
    ("unknown_noise", {"a0": math.nan}, "a0"),
    ("unknown_noise", {"b0": 0.0}, "b0"),
    ("unknown_noise", {"prior_precision": 0.0}, "prior_precision"),
]


@pytest.mark.parametrize(("name", "bad", "argument"), BAD_ARGUMENTS)
def test_models_reject_bad_scales(synthetic, name, bad, argument):
    model, kwargs = MODELS[name]
    with pytest.raises(ValueError, match=rf"{argument}=.* must be a finite number > 0"):
        model(*synthetic, **(kwargs | bad))


@pytest.mark.parametrize("name", MODELS)
def test_models_reject_bad_data(synthetic, name):
    model, kwargs = MODELS[name]
    x, y = synthetic
    with pytest.raises(ValueError, match=r"x must be a 2-D tensor"):
        model(x[:, 0], y, **kwargs)
    with pytest.raises(ValueError, match=r"y must be a tensor of shape \(N,\) = \(50,\)"):
        model(x, y[:-1], **kwargs)


def test_references_reject_bad_arguments(synthetic):
    x, y = synthetic
    with pytest.raises(ValueError, match="noise_scale"):
        lr.conjugate_posterior(x, y, noise_scale=0.0, prior_precision=1.0)
    with pytest.raises(ValueError, match="max_iter"):
        lr.vb_hyperprior(x, y, noise_scale=1.0, a0=1.0, b0=1.0, max_iter=0)
    post = lr.conjugate_posterior(x, y, noise_scale=1.0, prior_precision=1.0)
    with pytest.raises(ValueError, match="prob"):
        lr.predictive_interval_known_noise(post, x, noise_scale=1.0, prob=1.0)
    with pytest.raises(ValueError, match="x_new has 2 columns"):
        lr.predictive_interval_known_noise(post, x[:, :2], noise_scale=1.0)
    with pytest.raises(ValueError, match="shapes"):
        lr.kl_gaussian(post.mean, post.cov, post.mean[:2], post.cov)
