"""ELBO estimators of Bayes-by-backprop networks: weight sampling and the local
reparameterisation trick, analytic and Monte Carlo KL, full batch and minibatch, checked
against the exact ELBO of Bayesian linear regression and against each other (MCSE tolerances),
and the gradient variance of the two samplers."""

import math

import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from torch import nn

from pyroext.models.bnn import BayesianMLP, GaussianPrior, ScaleMixturePrior
from pyroext.models.bnn.guide import AutoBayesByBackprop
from pyroext.models.linear_regression import exact as lre

NOISE = 0.7
# Full-batch estimates vary with the weights only, so a few large chunks suffice; minibatch
# estimates vary mostly with the batch, so they need many chunks and few particles each.
FULL, MINIBATCH = (40, 250), (400, 10)
Z_MAX = 4.0  # two-sided p ~ 6e-5 per comparison
ELBOS = {"trace": Trace_ELBO, "mean_field": TraceMeanField_ELBO}


def regression_data(num_data=100):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(num_data, 3, generator=generator, dtype=torch.float64)
    noise = NOISE * torch.randn(num_data, generator=generator, dtype=torch.float64)
    return x, x @ x.new_tensor([1.0, -2.0, 0.5]) + 0.3 + noise


def sine_data(num_data=100):
    generator = torch.Generator().manual_seed(1)
    x = torch.rand(num_data, 1, generator=generator, dtype=torch.float64) * 4 - 2
    noise = 0.1 * torch.randn(num_data, generator=generator, dtype=torch.float64)
    return x, torch.sin(2 * x[:, 0]) + noise


def mlp(prior=None):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(1, 32), nn.Tanh(), nn.Linear(32, 1)).double()
    return BayesianMLP(net, prior=prior or GaussianPrior(), noise_scale=0.1)


def elbo_estimate(elbo, model, guide, data, batch_size=None):
    """Mean and MCSE of the ELBO from independent vectorised estimates (chunks); with a
    batch_size, each chunk draws its own minibatch (without replacement)."""
    chunks, particles = MINIBATCH if batch_size else FULL
    loss = ELBOS[elbo](num_particles=particles, vectorize_particles=True, max_plate_nesting=1)
    x, y = data
    values = []
    for _ in range(chunks):
        index = torch.randperm(len(x))[:batch_size] if batch_size else torch.arange(len(x))
        values.append(-loss.loss(model, guide, x[index], y[index], num_data=len(x)))
    values = torch.tensor(values, dtype=torch.float64)
    return values.mean().item(), values.std().item() / math.sqrt(chunks)


def z_score(a, b):
    return abs(a[0] - b[0]) / math.hypot(a[1], b[1])


@pytest.mark.parametrize("batch_size", [None, 20], ids=["full", "minibatch"])
@pytest.mark.parametrize("local_reparameterization", [False, True], ids=["weights", "lrt"])
@pytest.mark.parametrize("elbo", ELBOS)
def test_estimators_match_exact_elbo_of_linear_regression(
    elbo, local_reparameterization, batch_size
):
    """ELBO(q) = log p(y) - KL(q || p(theta | y)) exactly, for any q."""
    x, y = data = regression_data()
    net = nn.Sequential(nn.Linear(3, 1, dtype=torch.float64))
    model = BayesianMLP(net, prior=GaussianPrior(1.0), noise_scale=NOISE)
    guide = AutoBayesByBackprop(
        model, init_scale=0.3, local_reparameterization=local_reparameterization
    )
    guide(x, y)
    (w_loc, w_scale), (b_loc, b_scale) = guide.locs_and_scales().values()
    mean = torch.cat([w_loc.flatten(), b_loc]).detach()
    cov = torch.diag(torch.cat([w_scale.flatten(), b_scale]).detach().square())
    exact = lre.conjugate_posterior(x, y, noise_scale=NOISE, prior_precision=1.0)
    log_evidence = lre.log_evidence_known_noise(x, y, noise_scale=NOISE, prior_precision=1.0)
    expected = log_evidence - lre.kl_gaussian(mean, cov, exact.mean, exact.cov)
    estimate, mcse = elbo_estimate(elbo, model, guide, data, batch_size)
    assert abs(estimate - expected) < Z_MAX * mcse


@pytest.mark.parametrize("prior", [GaussianPrior(), ScaleMixturePrior()], ids=["gauss", "mix"])
def test_local_reparameterisation_keeps_expected_elbo_of_mlp(prior):
    """Weight sampling and the LRT estimate the same ELBO of a one-hidden-layer network, with
    the KL term by Monte Carlo (Trace_ELBO) or, for the Gaussian prior, in closed form."""
    data = sine_data()
    model = mlp(prior)
    guide = AutoBayesByBackprop(model, init_scale=0.1)
    guide(*data)
    estimates = {}
    for elbo in ELBOS:
        for lrt in (False, True):
            guide.local_reparameterization = lrt
            estimates[elbo, lrt] = elbo_estimate(elbo, model, guide, data)
    reference = estimates["trace", False]
    assert all(z_score(estimate, reference) < Z_MAX for estimate in estimates.values())


def test_local_reparameterisation_keeps_each_points_output_law_in_mlp():
    """Each point's output has the same law under both samplers (only the dependence between
    points differs): per-point means and variances agree within Z_MAX standard errors."""
    x, _ = sine_data(10)
    model = mlp()
    guide = AutoBayesByBackprop(model, init_scale=0.1)
    guide(x)
    num = 20000
    moments = []
    for lrt in (False, True):
        guide.local_reparameterization = lrt
        with torch.no_grad(), pyro.plate("particles", num, dim=-2):
            outputs = poutine.replay(model, trace=poutine.trace(guide).get_trace(x))(x)
        squares = (outputs - outputs.mean(0)).square()
        moments.append((outputs.mean(0), squares.mean(0), squares.var(0)))
    (mean0, var0, var_var0), (mean1, var1, var_var1) = moments
    assert ((mean0 - mean1).abs() < Z_MAX * ((var0 + var1) / num).sqrt()).all()
    assert ((var0 - var1).abs() < Z_MAX * ((var_var0 + var_var1) / num).sqrt()).all()


@pytest.mark.parametrize("local_reparameterization", [False, True], ids=["weights", "lrt"])
def test_minibatch_elbo_is_unbiased_for_full_batch_elbo(local_reparameterization):
    data = sine_data()
    model = mlp()
    guide = AutoBayesByBackprop(
        model, init_scale=0.1, local_reparameterization=local_reparameterization
    )
    guide(*data)
    full = elbo_estimate("trace", model, guide, data)
    minibatch = elbo_estimate("trace", model, guide, data, batch_size=10)
    assert z_score(full, minibatch) < Z_MAX


def gradient_variance(model, guide, data, draws):
    """Total variance (trace of the covariance) of single-particle gradients of the loss with
    respect to the guide's unconstrained parameters (means and rho)."""
    loss = TraceMeanField_ELBO(max_plate_nesting=1)
    params = list(guide.parameters())
    grads = []
    for _ in range(draws):
        value = loss.differentiable_loss(model, guide, *data)
        grads.append(torch.cat([g.flatten() for g in torch.autograd.grad(value, params)]))
    return torch.stack(grads).var(0).sum().item()


def test_local_reparameterisation_lowers_gradient_variance():
    data = sine_data()
    model = mlp()
    guide = AutoBayesByBackprop(model, init_scale=0.1)
    guide(*data)
    pyro.set_rng_seed(2)
    weights = gradient_variance(model, guide, data, draws=200)
    guide.local_reparameterization = True
    local = gradient_variance(model, guide, data, draws=200)
    assert local < 0.1 * weights
