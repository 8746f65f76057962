"""The VAE estimators' teaching points: same expectation, different variance."""

import math

import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO

from pyroext.data import load_digits
from pyroext.models.vae import VAE, MLPDecoder, MLPEncoder
from pyroext.models.vae.estimators import elbo_estimates, encoder_gradients


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    x = torch.bernoulli(load_digits(dtype=torch.float64).x[:3])
    vae = VAE(MLPEncoder(64, 2, (8,)), MLPDecoder(2, 64, (8,)), 2).double()
    return vae, x


def test_analytic_kl_estimator_has_the_same_mean_and_lower_variance(setup):
    vae, x = setup
    torch.manual_seed(1)
    plain = elbo_estimates(vae, x, "monte-carlo", 3000)
    analytic = elbo_estimates(vae, x, "analytic-kl", 3000)
    mcse = math.hypot(plain.std().item(), analytic.std().item()) / math.sqrt(3000)
    assert abs(plain.mean().item() - analytic.mean().item()) < 4 * mcse
    assert analytic.var() < 0.8 * plain.var()


@pytest.mark.slow
def test_both_gradient_estimators_are_unbiased(setup):
    vae, x = setup
    torch.manual_seed(2)
    elbo = Trace_ELBO(num_particles=50_000, vectorize_particles=True, max_plate_nesting=1)
    with poutine.block():
        loss = elbo.differentiable_loss(vae.model, vae.guide, x)
    reference = torch.cat(
        [g.reshape(-1) for g in torch.autograd.grad(-loss, list(vae.encoder.parameters()))]
    )
    variances = {}
    for estimator, num in (("reparameterised", 400), ("score-function", 4000)):
        draws = encoder_gradients(vae, x, estimator, num)
        se = draws.std(0) / math.sqrt(num)
        informative = se > 1e-8  # parameters the loss does not reach have exactly zero grads
        z = (draws.mean(0) - reference)[informative] / se[informative]
        assert z.abs().max() < 5.0, (estimator, z.abs().max())  # 556 coordinates
        variances[estimator] = draws.var(0)[informative].sum()
    assert variances["score-function"] > 10 * variances["reparameterised"]


def test_score_function_draws_are_not_differentiable_paths(setup):
    vae, x = setup
    reparam, score = (
        encoder_gradients(vae, x, e, 1) for e in ("reparameterised", "score-function")
    )
    assert reparam.shape == score.shape and not torch.equal(reparam, score)
    with pytest.raises(ValueError, match="estimator='pathwise' must be one of reparameterised"):
        encoder_gradients(vae, x, "pathwise", 1)
