"""Models and helpers shared by the tests of the MCMC-in-guide autoguides."""

__all__ = [
    "NOISE",
    "correlated_regression",
    "loss_with_seed",
    "perturb_base_flow",
    "positive_model",
    "regression",
]

import functools

import pyro
import pyro.distributions as dist
import torch

from pyroext.models import linear_regression as lr

NOISE = 0.7


def positive_model(y):
    """A constrained latent (LogNormal scale) so that guides carry a Jacobian term."""
    scale = pyro.sample("scale", dist.LogNormal(0.0, 1.0))
    loc = pyro.sample("loc", dist.Normal(0.0, 2.0))
    with pyro.plate("data", y.shape[0]):
        pyro.sample("obs", dist.Normal(loc, scale), obs=y)


def correlated_regression(num_data=40):
    """Correlated features: the posterior is far from mean-field (gap about 0.5 nats)."""
    generator = torch.Generator().manual_seed(3)
    base = torch.randn(num_data, 1, generator=generator, dtype=torch.float64)
    x = base + 0.3 * torch.randn(num_data, 2, generator=generator, dtype=torch.float64)
    y = x @ torch.tensor([1.0, -0.5], dtype=torch.float64) + NOISE * torch.randn(
        num_data, generator=generator, dtype=torch.float64
    )
    return x, y


regression = functools.partial(lr.model_known_noise, noise_scale=NOISE, prior_precision=1.0)


def loss_with_seed(elbo, model, guide, *args, seed=1):
    pyro.set_rng_seed(seed)
    with torch.no_grad():
        return elbo.loss(model, guide, *args)


def perturb_base_flow(guide, seed=0):
    """Moves the flow layers off the identity they start at, the same way for every guide."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in guide.base_flow_nets.parameters():
            noise = torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype)
            parameter.add_(0.3 * noise)
