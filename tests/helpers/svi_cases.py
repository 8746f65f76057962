"""Regression models and data shared by the tests of ``run_svi``, eager and compiled."""

__all__ = ["minibatch_regression", "regression", "regression_data"]

import pyro
import pyro.distributions as dist
import torch


def regression(x, y=None):
    w = pyro.sample("w", dist.Normal(0.0, 1.0).expand([x.shape[1]]).to_event(1))
    sigma = pyro.sample("sigma", dist.LogNormal(0.0, 1.0))
    with pyro.plate("data", x.shape[0]):
        mean = (x * w.unsqueeze(-2)).sum(-1)
        pyro.sample("obs", dist.Normal(mean, sigma.unsqueeze(-1)), obs=y)


def minibatch_regression(x, y, size):
    w = pyro.sample("w", dist.Normal(0.0, 1.0).expand([x.shape[1]]).to_event(1))
    with pyro.plate("data", size, subsample_size=x.shape[0]):
        pyro.sample("obs", dist.Normal(x @ w, 0.5), obs=y)


def regression_data(intercept: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """40 points of ``y = x @ (1, -1, 0.5) + intercept + N(0, 0.5^2)`` in float64."""
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(40, 3, generator=generator, dtype=torch.float64)
    y = x @ torch.tensor([1.0, -1.0, 0.5], dtype=torch.float64) + intercept
    return x, y + 0.5 * torch.randn(40, generator=generator, dtype=torch.float64)
