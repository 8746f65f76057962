"""L-MCVAE and A-MCVAE: the guides' importance weights are unbiased for p(x), checked against
quadrature on a one-dimensional latent. (MetVAE's weights have infinite variance: its exact
checks are in ``test_metvae.py``.)"""

import math

import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO
from tiny_vaes import exact_log_evidence, log_weights, tiny

import pyroext.guides.score as score_module
from pyroext.models.vae import MLPDecoder, MLPEncoder
from pyroext.models.vae.mcvae import AnnealedVAE, LangevinVAE
from pyroext.models.vae.metvae import MetVAE

MONTE_CARLO_VAES = [LangevinVAE, AnnealedVAE, MetVAE]


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


@pytest.mark.parametrize("cls", MONTE_CARLO_VAES)
def test_steps_move_the_draws_and_their_weights(cls):
    vae = tiny(cls)
    x = torch.tensor([[1.0, 0.0, 1.0, 1.0]], dtype=torch.float64)
    with torch.no_grad(), pyro.plate("particles", 8, dim=-2):
        trace = poutine.trace(vae.guide).get_trace(x)
    z0, z = trace.nodes["z0"]["value"], trace.nodes["z"]["value"]
    # MetVAE may reject every step of a chain, but not of all eight.
    assert z.shape == z0.shape == (8, 1, 1) and not torch.equal(z, z0)
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


@pytest.mark.parametrize(
    "options, message",
    [
        ({"num_steps": 0}, "num_steps=0 must be an integer >= 1"),
        ({"acceptance": "gibbs"}, "acceptance='gibbs' must be one of barker, mh"),
        ({"flow_init": "zeros"}, "flow_init='zeros' must be one of identity, random"),
    ],
)
def test_bad_metvae_options(options, message):
    with pytest.raises(ValueError, match=message):
        MetVAE(MLPEncoder(4, 1), MLPDecoder(1, 4), 1, **options)


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


def annealed_bound(vae: AnnealedVAE, x: torch.Tensor) -> torch.Tensor:
    """A-MCVAE's bound ``E[log w]`` with one MALA step, on a grid over ``(z_0, xi)``: the
    MALA step and the AIS weight written from their definitions, summed over accept/reject."""
    z_axis = torch.linspace(-8.0, 8.0, 801, dtype=torch.float64)
    xi_axis = torch.linspace(-7.0, 7.0, 561, dtype=torch.float64)
    z0, xi = (v.reshape(-1, 1) for v in torch.meshgrid(z_axis, xi_axis, indexing="ij"))
    z0.requires_grad_(True)
    loc, scale = vae.encoder(x)

    def log_q(z):
        return torch.distributions.Normal(loc, scale).log_prob(z).sum(-1)

    def log_p(z):
        return vae.log_joint(x, z)

    eta, beta = vae.schedule.step_sizes()[0], vae.schedule.betas()[0] / 2

    def value_and_grad(z):
        value = (1 - beta) * log_q(z) + beta * log_p(z)
        return value, torch.autograd.grad(value.sum(), z, create_graph=True)[0]

    def log_kernel(to, start, grad):
        return (
            torch.distributions.Normal(start + eta * grad, (2 * eta).sqrt()).log_prob(to).sum(-1)
        )

    value0, grad0 = value_and_grad(z0)
    y = z0 + eta * grad0 + (2 * eta).sqrt() * xi
    value_y, grad_y = value_and_grad(y)
    log_t = value_y - value0 + log_kernel(z0, y, grad_y) - log_kernel(y, z0, grad0)
    accept = log_t.clamp(max=0).exp()
    start = beta * (log_p(z0) - log_q(z0))
    log_w_accept = start + (1 - beta) * (log_p(y) - log_q(y))
    log_w_reject = start + (1 - beta) * (log_p(z0) - log_q(z0))
    density = (log_q(z0) + torch.distributions.Normal(0.0, 1.0).log_prob(xi).sum(-1)).exp()
    area = float((z_axis[1] - z_axis[0]) * (xi_axis[1] - xi_axis[0]))
    return area * (density * (accept * log_w_accept + (1 - accept) * log_w_reject)).sum()


def test_annealed_bound_gradient_is_unbiased(monkeypatch):
    """Step size, encoder output layer and decoder output bias: the pathwise gradient plus the
    REINFORCE term of the accept choice equal the gradient of the bound on a grid."""
    vae = tiny(AnnealedVAE, num_steps=1, step_size=0.5, eta_max=2.0)
    x = torch.tensor([[1.0, 0.0, 1.0, 1.0]], dtype=torch.float64)
    parameters = [vae.schedule.raw_step, vae.encoder.head.bias, vae.decoder.head.bias]
    exact = torch.cat(
        [g.reshape(-1) for g in torch.autograd.grad(annealed_bound(vae, x), parameters)]
    )
    elbo = Trace_ELBO(num_particles=20_000, vectorize_particles=True, max_plate_nesting=1)

    def gradients(batches):
        draws = []
        for _ in range(batches):
            loss = elbo.differentiable_loss(vae.model, vae.guide, x)
            draws.append(
                torch.cat([g.reshape(-1) for g in torch.autograd.grad(-loss, parameters)])
            )
        draws = torch.stack(draws)
        return draws.mean(0), draws.std(0) / math.sqrt(batches)

    pyro.set_rng_seed(6)
    estimate, se = gradients(8)
    print("exact", exact, "\nMC", estimate, "\nse", se)
    assert torch.all((estimate - exact).abs() < 4 * se)
    monkeypatch.setattr(
        score_module, "score_function_term", lambda elbo, choices, baseline: 0 * elbo
    )
    ablated, ablated_se = gradients(8)
    print("without the score term", ablated, "+-", ablated_se)
    assert torch.any((ablated - exact).abs() > 10 * (ablated_se + se))
