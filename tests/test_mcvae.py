"""L-MCVAE and A-MCVAE: the guides' importance weights are unbiased for p(x), checked against
quadrature on a one-dimensional latent."""

import math

import pyro
import pytest
import torch
from pyro import poutine

from pyroext.models.mcvae import AnnealedVAE, LangevinVAE
from pyroext.models.vae import MLPDecoder, MLPEncoder


def tiny(cls=LangevinVAE, num_steps=3, step_size=0.05):
    torch.manual_seed(0)
    encoder, decoder = MLPEncoder(4, 1, (5,)), MLPDecoder(1, 4, (5,))
    return cls(encoder, decoder, 1, num_steps=num_steps, step_size=step_size).double()


def log_weights(vae, x, particles):
    with torch.no_grad(), pyro.plate("particles", particles, dim=-2):
        guide = poutine.trace(vae.guide).get_trace(x)
        model = poutine.trace(poutine.replay(vae.model, trace=guide)).get_trace(x)
    terms = [model.nodes[n]["fn"].log_prob(model.nodes[n]["value"]) for n in ("z", "x")]
    terms += [-guide.nodes[n]["fn"].log_prob(guide.nodes[n]["value"]) for n in ("z0", "z")]
    return sum(terms)  # (particles, images)


def exact_log_evidence(vae, x):
    grid = torch.linspace(-10, 10, 20001, dtype=torch.float64).unsqueeze(-1)
    with torch.no_grad():
        log_joint = torch.stack([vae.log_joint(image, grid) for image in x], -1)
    return torch.logsumexp(log_joint, 0) + math.log(grid[1, 0] - grid[0, 0])


@pytest.mark.parametrize("cls", [LangevinVAE, AnnealedVAE])
def test_importance_weights_are_unbiased_for_the_evidence(cls):
    vae = tiny(cls)
    x = torch.tensor([[1.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 0.0]], dtype=torch.float64)
    torch.manual_seed(1)
    weights = log_weights(vae, x, 40_000).exp()
    evidence = exact_log_evidence(vae, x).exp()
    mcse = weights.std(0) / math.sqrt(weights.shape[0])
    assert torch.all((weights.mean(0) - evidence).abs() < 4 * mcse), (weights.mean(0), evidence)
    assert torch.all(mcse < 0.02 * evidence)  # the check has power


@pytest.mark.parametrize("cls", [LangevinVAE, AnnealedVAE])
def test_steps_move_the_draws_and_their_weights(cls):
    vae = tiny(cls)
    x = torch.tensor([[1.0, 0.0, 1.0, 1.0]], dtype=torch.float64)
    with torch.no_grad():
        trace = poutine.trace(vae.guide).get_trace(x)
    z0, z = trace.nodes["z0"]["value"], trace.nodes["z"]["value"]
    assert z.shape == z0.shape == (1, 1) and not torch.equal(z, z0)
    assert torch.isfinite(trace.nodes["z"]["fn"].log_density).all()


@pytest.mark.parametrize(
    "options, message",
    [
        ({"num_steps": 0}, "num_steps=0 must be an integer >= 1"),
        ({"step_size": 0.2}, r"step_size=0.2 must lie in \(0, eta_max\) = \(0, 0.1\)"),
    ],
)
def test_bad_options(options, message):
    with pytest.raises(ValueError, match=message):
        LangevinVAE(MLPEncoder(4, 1), MLPDecoder(1, 4), 1, **options)


def test_annealed_guide_gets_the_score_gradient_of_its_accept_choices():
    """The DiCE term leaves the bound's value alone but gives the step sizes a gradient
    through log P(accept) as well as through the moves."""
    vae = tiny(AnnealedVAE)
    x = torch.tensor([[1.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 0.0]], dtype=torch.float64)
    torch.manual_seed(3)
    with pyro.plate("particles", 8, dim=-2):
        trace = poutine.trace(vae.guide).get_trace(x)
    node = trace.nodes["z"]
    log_density = node["fn"].log_density
    (grad,) = torch.autograd.grad(log_density.sum(), vae.schedule.raw_step, retain_graph=True)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
