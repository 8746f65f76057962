"""Bayesian MLP and its Bayes-by-backprop guide: sites, priors, initialisation, the local
reparameterisation, bad input, and SVI against exact Bayesian linear regression."""

import math

import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import SVI, Predictive, TraceMeanField_ELBO
from pyro.poutine.util import prune_subsample_sites
from torch import nn

from pyroext.guides import gaussian_moments
from pyroext.models.bnn import BayesianMLP, GaussianPrior, ScaleMixturePrior
from pyroext.models.bnn.guide import AutoBayesByBackprop
from pyroext.models.bnn.predict import sample_outputs
from pyroext.models.linear_regression import exact as lre

NOISE, PRIOR_PRECISION = 0.7, 1.0
NUM_DRAWS = 1000


def regression_data(num_data=100):
    """Three standard-normal features, weights (1, -2, 0.5), bias 0.3, noise sd 0.7."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(num_data, 3, generator=generator, dtype=torch.float64)
    noise = NOISE * torch.randn(num_data, generator=generator, dtype=torch.float64)
    return x, x @ x.new_tensor([1.0, -2.0, 0.5]) + 0.3 + noise


def linear_bnn(noise_scale=NOISE):
    net = nn.Sequential(nn.Linear(3, 1, dtype=torch.float64))
    prior = GaussianPrior(PRIOR_PRECISION**-0.5)
    return BayesianMLP(net, prior=prior, noise_scale=noise_scale)


def classifier():
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    return net, BayesianMLP(net, likelihood="categorical")


def fit(model, guide, x, y, steps):
    optim = pyro.optim.ClippedAdam({"lr": 0.05, "lrd": 0.002 ** (1 / steps)})
    elbo = TraceMeanField_ELBO(num_particles=8, vectorize_particles=True, max_plate_nesting=1)
    svi = SVI(model, guide, optim, elbo)
    for _ in range(steps):
        svi.step(x, y)


def test_gaussian_prior_density():
    value = torch.tensor([[0.3, -1.2], [2.0, 0.0]], dtype=torch.float64)
    prior = GaussianPrior(0.5).distribution(value.shape, value)
    assert prior.event_shape == (2, 2) and prior.batch_shape == ()
    expected = sum(-math.log(0.5 * math.sqrt(2 * math.pi)) - v**2 / 0.5 for v in value.flatten())
    assert prior.log_prob(value).item() == pytest.approx(float(expected), abs=1e-12)


def test_scale_mixture_prior_density():
    pi, sigma1, sigma2 = 0.25, 1.0, math.exp(-6)
    value = torch.tensor([0.3, -1e-3, 0.0, 2.5], dtype=torch.float64)
    prior = ScaleMixturePrior(pi, sigma1, sigma2).distribution(value.shape, value)
    assert prior.event_shape == (4,) and prior.batch_shape == ()

    def normal(v, s):
        return math.exp(-(v**2) / (2 * s**2)) / (s * math.sqrt(2 * math.pi))

    expected = sum(math.log(pi * normal(v, sigma1) + (1 - pi) * normal(v, sigma2)) for v in value)
    assert prior.log_prob(value).item() == pytest.approx(expected, abs=1e-10)
    assert prior.sample((5,)).shape == (5, 4)


def test_scale_mixture_draws_have_the_mixture_variance_and_narrow_mass():
    pi, sigma1, sigma2 = 0.5, 1.0, math.exp(-6)
    value = torch.zeros(200_000, dtype=torch.float64)
    prior = ScaleMixturePrior(pi, sigma1, sigma2).distribution(value.shape, value)
    torch.manual_seed(0)
    draws = prior.sample()
    variance = pi * sigma1**2 + (1 - pi) * sigma2**2
    fourth = 3 * (pi * sigma1**4 + (1 - pi) * sigma2**4)
    mcse = math.sqrt((fourth - variance**2) / len(draws))
    assert prior.variance[0].item() == pytest.approx(variance)
    assert draws.square().mean().item() == pytest.approx(variance, abs=4 * mcse)
    # mass within 3 sigma2 of zero: almost all of the narrow component, little of the wide one
    inside = math.erf(3 / math.sqrt(2))
    narrow = (1 - pi) * inside + pi * math.erf(3 * sigma2 / (sigma1 * math.sqrt(2)))
    binomial_se = math.sqrt(narrow * (1 - narrow) / len(draws))
    fraction = (draws.abs() < 3 * sigma2).double().mean().item()
    assert fraction == pytest.approx(narrow, abs=4 * binomial_se)


def test_sites_shapes_and_minibatch_scale():
    _, model = classifier()
    x, y = torch.randn(6, 4), torch.randint(3, (6,))
    trace = prune_subsample_sites(poutine.trace(model).get_trace(x, y, num_data=60))
    shapes = {name: tuple(site["value"].shape) for name, site in trace.iter_stochastic_nodes()}
    assert shapes == {
        "net.0.weight": (8, 4),
        "net.0.bias": (8,),
        "net.2.weight": (3, 8),
        "net.2.bias": (3,),
    }
    assert trace.nodes["obs"]["scale"] == 10.0
    assert all(trace.nodes[name]["scale"] == 1.0 for name in shapes)
    assert trace.nodes["_RETURN"]["value"].shape == (6, 3)
    guide = AutoBayesByBackprop(model)
    assert sample_outputs(model, guide, x, num_samples=5).shape == (5, 6, 3)
    draws = Predictive(model, guide=guide, num_samples=4, return_sites=["obs"])(x)
    assert draws["obs"].shape == (4, 6)


def test_guide_starts_at_the_deterministic_network():
    net, model = classifier()
    x = torch.randn(5, 4)
    guide = AutoBayesByBackprop(model, init_scale=1e-6)
    guide(x)
    medians = guide.median()
    for name, value in net.named_parameters():
        assert torch.equal(medians[f"net.{name}"], value.detach())
    for _, scale in guide.locs_and_scales().values():
        assert torch.allclose(scale, torch.full_like(scale, 1e-6), rtol=1e-4)
    outputs = sample_outputs(model, guide, x, num_samples=3)
    assert torch.allclose(outputs, net(x).detach().expand(3, 5, 3), atol=1e-4)
    assert type(net[0]) is nn.Linear  # the caller's network is left as it was


@pytest.mark.parametrize("prior", [GaussianPrior(0.5), ScaleMixturePrior()])
def test_priors_and_initial_weights_follow_model_to(prior):
    # The same buffers carry the priors and initial weights to a GPU with model.to("cuda").
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    model = BayesianMLP(net, prior=prior, likelihood="categorical").to(torch.float64)
    x, y = torch.randn(6, 4, dtype=torch.float64), torch.randint(3, (6,))
    trace = poutine.trace(model).get_trace(x, y)
    weight = trace.nodes["net.0.weight"]
    assert weight["value"].dtype == torch.float64 and weight["fn"].mean.dtype == torch.float64
    expected = prior.distribution(weight["value"].shape, weight["value"])
    assert weight["fn"].log_prob(weight["value"]).item() == pytest.approx(
        expected.log_prob(weight["value"]).item(), rel=1e-12
    )
    guide = AutoBayesByBackprop(model)
    guide(x, y)
    loc, _ = guide.locs_and_scales()["net.2.weight"]
    assert loc.dtype == torch.float64 and torch.equal(loc, net[2].weight.detach().double())
    assert "net.0.weight_initial" not in model.state_dict()


def test_local_reparameterisation_draws_preactivations_from_guide_moments():
    """A one-layer network's outputs under the LRT are N(x m + m_b, x^2 s^2 + s_b^2) per point,
    independent of the guide's weight draw."""
    x, _ = regression_data(5)
    model = linear_bnn()
    guide = AutoBayesByBackprop(model, init_scale=0.3, local_reparameterization=True)
    num = 4000
    with pyro.plate("particles", num, dim=-2):
        trace = poutine.trace(guide).get_trace(x)
        outputs = poutine.replay(model, trace=trace)(x)
    (w_loc, w_scale), (b_loc, b_scale) = guide.locs_and_scales().values()
    mean = (x @ w_loc.T).squeeze(-1) + b_loc
    variance = (x.square() @ w_scale.square().T).squeeze(-1) + b_scale.square()
    z_mean = (outputs.mean(0) - mean) / (variance / num).sqrt()
    z_var = (outputs.var(0) / variance - 1) / math.sqrt(2 / (num - 1))
    assert (z_mean.abs() < 4).all() and (z_var.abs() < 4).all()
    weights, bias = (trace.nodes[f"net.0.{name}"]["value"] for name in ("weight", "bias"))
    from_weights = (x * weights.squeeze(-2)).sum(-1) + bias.squeeze(-1)
    assert from_weights.shape == outputs.shape
    assert (outputs - from_weights).abs().mean() > 0.1


@pytest.mark.parametrize("local_reparameterization", [False, True])
def test_guide_reaches_mean_field_optimum_of_linear_regression(local_reparameterization):
    """No hidden layer, known noise, Gaussian prior: Bayesian linear regression, whose best
    mean-field Gaussian keeps the exact posterior mean, with variances 1 / diag(precision)."""
    x, y = regression_data()
    model = linear_bnn()
    guide = AutoBayesByBackprop(model, local_reparameterization=local_reparameterization)
    fit(model, guide, x, y, steps=1500)
    exact = lre.conjugate_posterior(x, y, noise_scale=NOISE, prior_precision=PRIOR_PRECISION)
    optimum = lre.mean_field_optimum(exact)
    mean, cov = gaussian_moments(guide)
    # the tolerances of test_linear_regression_svi, applied to the guide's exact moments: 3 MCSE
    # of the mean of NUM_DRAWS exact posterior draws, 3 standard errors of the variance of
    # NUM_DRAWS Gaussian draws, and 0.02 nats of KL divergence
    mcse_mean = exact.cov.diagonal().sqrt() / math.sqrt(NUM_DRAWS)
    assert ((mean - exact.mean).abs() < 3 * mcse_mean).all()
    variance = optimum.cov.diagonal()
    assert ((cov.diagonal() / variance - 1).abs() < 3 * math.sqrt(2 / (NUM_DRAWS - 1))).all()
    kl = lre.kl_gaussian(mean, cov, exact.mean, exact.cov)
    kl_optimum = lre.kl_gaussian(optimum.mean, optimum.cov, exact.mean, exact.cov)
    assert abs(kl - kl_optimum) < 0.02


def test_learned_noise_scale_is_the_expected_residual():
    """With the noise scale a point estimate, the ELBO is stationary in it where
    sigma^2 = E_q |y - Phi theta|^2 / N = (|y - Phi m|^2 + tr(Phi^T Phi S)) / N."""
    x, y = regression_data()
    model = linear_bnn(noise_scale=None)
    guide = AutoBayesByBackprop(model, local_reparameterization=True)
    fit(model, guide, x, y, steps=1000)
    mean, cov = gaussian_moments(guide)
    phi = torch.cat([x, x.new_ones(len(x), 1)], 1)
    expected = ((y - phi @ mean).square().sum() + (phi.T @ phi * cov).sum()) / len(x)
    assert model.noise_scale.item() == pytest.approx(expected.sqrt().item(), rel=2e-3)


LINEAR = BayesianMLP(nn.Sequential(nn.Linear(2, 1)), noise_scale=1.0)
X = torch.zeros(4, 2)
BAD_CALLS = {
    "prior scale": (lambda: GaussianPrior(0.0), "scale=0.0 must be a finite number > 0"),
    "pi = 1": (lambda: ScaleMixturePrior(pi=1.0), r"pi=1.0 must be in the open interval \(0, 1\)"),
    "pi = 0": (lambda: ScaleMixturePrior(pi=0.0), r"pi=0.0 must be in the open interval \(0, 1\)"),
    "sigma1": (lambda: ScaleMixturePrior(sigma1=-1.0), "sigma1=-1.0 must be a finite number > 0"),
    "sigma2": (lambda: ScaleMixturePrior(sigma2=math.inf), "sigma2=inf must be a finite number"),
    "likelihood": (
        lambda: BayesianMLP(nn.Sequential(nn.Linear(2, 1)), likelihood="poisson"),
        "likelihood='poisson' must be one of gaussian, categorical",
    ),
    "noise scale": (
        lambda: BayesianMLP(nn.Sequential(nn.Linear(2, 1)), noise_scale=0.0),
        "noise_scale=0.0 must be a finite number > 0",
    ),
    "regression width": (
        lambda: BayesianMLP(nn.Sequential(nn.Linear(2, 3))),
        "the gaussian likelihood needs 1 network output, net has 3",
    ),
    "classification width": (
        lambda: BayesianMLP(nn.Sequential(nn.Linear(2, 1)), likelihood="categorical"),
        "the categorical likelihood needs >= 2 network outputs, net has 1",
    ),
    "classification noise": (
        lambda: BayesianMLP(
            nn.Sequential(nn.Linear(2, 2)), likelihood="categorical", noise_scale=1.0
        ),
        "noise_scale must be None for the categorical likelihood",
    ),
    "layer with parameters": (
        lambda: BayesianMLP(nn.Sequential(nn.Linear(2, 4), nn.LayerNorm(4), nn.Linear(4, 1))),
        r"net\[1\] \(LayerNorm\) has parameters but is not nn.Linear",
    ),
    "no linear layer": (
        lambda: BayesianMLP(nn.Sequential(nn.Tanh())),
        "net must contain at least one nn.Linear layer",
    ),
    "x width": (lambda: LINEAR(torch.zeros(4, 3)), r"x must have shape \(B, 2\), got \(4, 3\)"),
    "y shape": (lambda: LINEAR(X, torch.zeros(3)), r"y must have shape \(4,\), got \(3,\)"),
    "num_data": (lambda: LINEAR(X, num_data=3), "num_data=3 must be >= the batch size 4"),
    "parallel Predictive": (
        lambda: Predictive(
            LINEAR, guide=AutoBayesByBackprop(LINEAR), num_samples=3, parallel=True
        )(X),
        r"weights of batch shape \(3,\) leave no size-1 dimension for the data plate",
    ),
    "init_scale": (
        lambda: AutoBayesByBackprop(LINEAR, init_scale=0.0),
        "init_scale=0.0 must be a finite number > 0",
    ),
}


@pytest.mark.parametrize("case", BAD_CALLS)
def test_bad_input_raises_value_error(case):
    call, message = BAD_CALLS[case]
    with pytest.raises(ValueError, match=message):
        call()


def test_bad_types_and_order_raise():
    with pytest.raises(TypeError, match="net must be an nn.Sequential, got Linear"):
        BayesianMLP(nn.Linear(2, 1))
    with pytest.raises(TypeError, match="model must be a BayesianMLP, got function"):
        AutoBayesByBackprop(regression_data)
    with pytest.raises(RuntimeError, match="call the guide once"):
        AutoBayesByBackprop(LINEAR).locs_and_scales()
