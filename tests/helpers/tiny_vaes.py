"""Tiny Monte Carlo VAEs on a one-dimensional latent, and exact references for them."""

import math

import pyro
import torch
from pyro import poutine

from pyroext.models.vae import VAE, MLPDecoder, MLPEncoder
from pyroext.models.vae.mcvae import LangevinVAE
from pyroext.models.vae.metvae import MetVAE


def tiny(cls: type[VAE] = LangevinVAE, num_steps: int = 3, **options) -> VAE:
    """A float64 VAE with 4 pixels, 1 latent and 5 hidden units (MetVAE with a random flow,
    the default, so that its proposals move; the Langevin ones with step size 0.05)."""
    torch.manual_seed(0)
    encoder, decoder = MLPEncoder(4, 1, (5,)), MLPDecoder(1, 4, (5,))
    if cls is not MetVAE:
        options = {"step_size": 0.05} | options
    return cls(encoder, decoder, 1, num_steps=num_steps, **options).double()


def log_weights(vae: VAE, x: torch.Tensor, particles: int) -> torch.Tensor:
    """``log p(x, z) - log q(z0, z | x)`` from the guide's and model's traces, ``(P, B)``."""
    with torch.no_grad(), pyro.plate("particles", particles, dim=-2):
        guide = poutine.trace(vae.guide).get_trace(x)
        model = poutine.trace(poutine.replay(vae.model, trace=guide)).get_trace(x)
    terms = [model.nodes[n]["fn"].log_prob(model.nodes[n]["value"]) for n in ("z", "x")]
    terms += [-guide.nodes[n]["fn"].log_prob(guide.nodes[n]["value"]) for n in ("z0", "z")]
    return sum(terms)


def exact_log_evidence(vae: VAE, x: torch.Tensor) -> torch.Tensor:
    """``log p(x)`` per image by quadrature over the latent."""
    grid = torch.linspace(-10, 10, 20001, dtype=torch.float64).unsqueeze(-1)
    with torch.no_grad():
        log_joint = torch.stack([vae.log_joint(image, grid) for image in x], -1)
    return torch.logsumexp(log_joint, 0) + math.log(grid[1, 0] - grid[0, 0])
