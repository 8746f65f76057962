"""MetVAE against an exact enumeration of its discrete paths on a one-dimensional latent.

Given the innovation noise, ``K`` MetFlow steps move ``z_0`` along one of ``4^K`` paths (a
direction and an accept decision per step), each a diffeomorphism, so the bound, the mean
importance weight and their gradients are sums over paths of grid integrals over ``z_0``. The
enumeration is written here from the MetFlow definitions (Barker acceptance, reverse model
``prod_k P(v_k) / 2``) and shares only the kernel's maps, the encoder and ``log_joint`` with
the guide. The weights have infinite variance, so the guide's Monte Carlo draws are checked
through ``E[log w]`` (the bound) and its gradient, whose errors have valid CLT bars.
"""

import math
from typing import NamedTuple

import pyro
import pytest
import torch
import torch.nn.functional as F
from pyro import poutine
from pyro.infer import Trace_ELBO
from tiny_vaes import exact_log_evidence, log_weights, tiny
from torch import Tensor

import pyroext.guides.score as score_module
from pyroext.models.vae.metvae import MetVAE

F64 = torch.float64
# q0 has sd ~0.3 here and the flow scales by up to e^2 per step: the z_0 that some paths
# carry into the bulk of p(x, z) lie far out in q0's tail, so the grid is wide.
GRID = torch.linspace(-40.0, 40.0, 100_001, dtype=F64).unsqueeze(-1)
IMAGE = torch.tensor([[1.0, 0.0, 1.0, 1.0]], dtype=F64)
DIRECTION_LOGIT = 0.4
PARTICLES = 20_000
BATCHES = 8


class Enumeration(NamedTuple):
    """Exact expectations under the guide for one image."""

    bound: Tensor  # E[log w]
    weight: Tensor  # E[w]


def enumerate_paths(vae: MetVAE, x: Tensor) -> Enumeration:
    """Sums every path's ``q0(z_0) P(path | z_0)`` times ``log w`` and ``w`` over the grid."""
    loc, scale = vae.encoder(x)
    log_q0 = torch.distributions.Normal(loc, scale).log_prob(GRID).sum(-1)
    zeros = torch.zeros_like(log_q0)
    # Per path: position, log p(x, z), log P(choices), log-density terms beyond q0.
    paths = [(GRID, vae.log_joint(x, GRID), zeros, zeros)]
    logit = vae.kernel.direction_logit
    for forward, inverse in vae.kernel.moves(loc, scale):
        extended = []
        for z, log_gamma, log_path, log_extra in paths:
            for v, move in ((1, forward), (-1, inverse)):
                y, log_det = move(z)
                log_gamma_y = vae.log_joint(x, y)
                log_p_v, log_p_reverse = F.logsigmoid(v * logit), F.logsigmoid(-v * logit)
                log_t = log_gamma_y - log_gamma + log_det + log_p_reverse - log_p_v
                log_accept, log_reject = -F.softplus(-log_t), -F.softplus(log_t)
                extended.append(
                    (
                        y,
                        log_gamma_y,
                        log_path + log_p_v + log_accept,
                        log_extra + log_det - log_accept,
                    )
                )
                extended.append(
                    (z, log_gamma, log_path + log_p_v + log_reject, log_extra - log_reject)
                )
        paths = extended
    step = float(GRID[1, 0] - GRID[0, 0])
    num_steps = len(vae.kernel.innovation)
    bound, weight = 0.0, 0.0
    for _, log_gamma, log_path, log_extra in paths:
        log_w = log_gamma - log_q0 + log_extra - num_steps * math.log(2)
        bound = bound + step * ((log_q0 + log_path).exp() * log_w).sum()
        weight = weight + step * (log_q0 + log_path + log_w).exp().sum()
    return Enumeration(bound, weight)


def metvae(num_steps: int) -> MetVAE:
    vae = tiny(MetVAE, num_steps)
    with torch.no_grad():
        vae.kernel.direction_logit.fill_(DIRECTION_LOGIT)
    return vae


@pytest.mark.parametrize("num_steps", [1, 2, 3])
def test_enumerated_weights_are_unbiased_for_the_evidence(num_steps):
    vae = metvae(num_steps)
    with torch.no_grad():
        exact = enumerate_paths(vae, IMAGE)
        evidence = exact_log_evidence(vae, IMAGE).exp()
    assert float(exact.weight) == pytest.approx(float(evidence), rel=1e-8)
    assert float(exact.bound) < math.log(float(evidence)) - 0.1  # a strict bound here


@pytest.mark.parametrize("num_steps", [1, 3])
def test_guide_draws_give_the_enumerated_bound(num_steps):
    vae = metvae(num_steps)
    with torch.no_grad():
        exact = float(enumerate_paths(vae, IMAGE).bound)
    torch.manual_seed(2)
    log_w = log_weights(vae, IMAGE, 50_000)[:, 0]
    mcse = float(log_w.std()) / math.sqrt(len(log_w))
    print(f"K={num_steps}: bound exact {exact:.4f}, MC {float(log_w.mean()):.4f} +- {mcse:.4f}")
    assert abs(float(log_w.mean()) - exact) < 4 * mcse
    assert mcse < 0.01


def _gradients(vae: MetVAE, parameters: list[Tensor]) -> tuple[Tensor, Tensor]:
    """Mean and standard error over batches of the Monte Carlo gradient of the bound."""
    elbo = Trace_ELBO(num_particles=PARTICLES, vectorize_particles=True, max_plate_nesting=1)
    draws = []
    for _ in range(BATCHES):
        loss = elbo.differentiable_loss(vae.model, vae.guide, IMAGE)
        draws.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(-loss, parameters)]))
    draws = torch.stack(draws)
    return draws.mean(0), draws.std(0) / math.sqrt(BATCHES)


def test_bound_gradient_is_unbiased(monkeypatch):
    """Direction logit, encoder output layer and decoder output bias: the REINFORCE term of the
    choices plus the pathwise gradient equal the gradient of the enumerated bound."""
    vae = metvae(2)
    parameters = [vae.kernel.direction_logit, vae.encoder.head.bias, vae.decoder.head.bias]
    exact = torch.autograd.grad(enumerate_paths(vae, IMAGE).bound, parameters)
    exact = torch.cat([g.reshape(-1) for g in exact])
    pyro.set_rng_seed(5)
    estimate, se = _gradients(vae, parameters)
    print("exact", exact, "\nMC", estimate, "\nse", se)
    assert torch.all((estimate - exact).abs() < 4 * se)
    assert torch.all(se < 0.05 * exact.abs().max())

    # Without the score term the direction logit's gradient is lost: the check has power.
    monkeypatch.setattr(
        score_module, "score_function_term", lambda elbo, choices, baseline: 0 * elbo
    )
    ablated, ablated_se = _gradients(vae, parameters[:1])
    print("without the score term", ablated, "+-", ablated_se)
    assert abs(float(ablated - exact[0])) > 10 * float(ablated_se + se[0])


def test_identity_flow_starts_as_the_base_guide():
    """With ``flow_init="identity"`` every proposal is ``z`` itself: draws stay at ``z_0``."""
    torch.manual_seed(0)
    vae = tiny(MetVAE, 3, flow_init="identity")
    with torch.no_grad():
        trace = poutine.trace(vae.guide).get_trace(IMAGE)
    assert torch.equal(trace.nodes["z"]["value"], trace.nodes["z0"]["value"])
    rates = vae.sample_stats["acceptance_rate"]
    assert rates.shape == (1, 3)
    assert torch.allclose(rates, torch.full((1, 3), 0.5, dtype=F64))
