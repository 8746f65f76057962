"""Shared targets and helpers of the kernel tests: a Gaussian-mixture target with exact
moments, a Gaussian target with known normalising constant, and random coupling flows."""

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from pyroext.kernels import (
    ConditionalCouplingFlow,
    value_and_grad,
)

DT = torch.float64

# Invariance target: a correlated two-component Gaussian mixture in 2-D (exact moments below).
MIX_WEIGHTS = torch.tensor([0.35, 0.65], dtype=DT)
MIX_MEANS = torch.tensor([[-1.0, 0.8], [1.0, -0.5]], dtype=DT)
MIX_COVS = torch.tensor([[[0.5, 0.2], [0.2, 0.4]], [[0.6, -0.25], [-0.25, 0.5]]], dtype=DT)
MIX_COMPONENTS = torch.distributions.MultivariateNormal(MIX_MEANS, MIX_COVS)

# Weight target: gamma = Z N(m, S) with known Z; base q0 = N(mu0, s0^2 I), shifted and wide
# enough that every importance weight below has a finite variance (so the MCSE is meaningful).
LOG_Z = 1.3
GAMMA_NORMAL = torch.distributions.MultivariateNormal(
    torch.tensor([0.5, -0.3], dtype=DT), torch.tensor([[1.0, 0.6], [0.6, 0.8]], dtype=DT)
)
BASE = torch.distributions.Independent(
    torch.distributions.Normal(
        torch.tensor([0.3, -0.1], dtype=DT), torch.full((2,), 2.0, dtype=DT)
    ),
    1,
)


def as_tensor64(value: float | list) -> Tensor:
    return torch.tensor(value, dtype=DT)


def log_mixture(z: Tensor) -> Tensor:
    return torch.logsumexp(MIX_WEIGHTS.log() + MIX_COMPONENTS.log_prob(z.unsqueeze(-2)), -1)


def grad_log_mixture(z: Tensor) -> Tensor:
    return value_and_grad(log_mixture, z)[1]


def sample_mixture(n: int) -> Tensor:
    component = torch.multinomial(MIX_WEIGHTS, n, replacement=True)
    noise = torch.randn(n, 2, 1, dtype=DT)
    return MIX_MEANS[component] + (torch.linalg.cholesky(MIX_COVS)[component] @ noise)[..., 0]


def mixture_statistics(z: Tensor) -> Tensor:
    """Per-chain z1, z2, z1^2, z2^2, z1 z2."""
    return torch.stack([z[:, 0], z[:, 1], z[:, 0] ** 2, z[:, 1] ** 2, z[:, 0] * z[:, 1]], -1)


def exact_mixture_statistics() -> Tensor:
    mean = (MIX_WEIGHTS[:, None] * MIX_MEANS).sum(0)
    outer = MIX_MEANS[:, :, None] * MIX_MEANS[:, None, :]
    second = (MIX_WEIGHTS[:, None, None] * (MIX_COVS + outer)).sum(0)
    return torch.stack([mean[0], mean[1], second[0, 0], second[1, 1], second[0, 1]])


def z_scores(samples: Tensor, exact: Tensor) -> Tensor:
    """(mean - exact) / MCSE over i.i.d. chains along dim 0."""
    se = samples.std(0) / math.sqrt(samples.shape[0])
    return (samples.mean(0) - exact) / se


def mixture_z_scores(z: Tensor) -> Tensor:
    return z_scores(mixture_statistics(z), exact_mixture_statistics())


def log_gamma(z: Tensor) -> Tensor:
    return LOG_Z + GAMMA_NORMAL.log_prob(z)


def random_flow(dim: int, context_dim: int, scale: float, seed: int) -> ConditionalCouplingFlow:
    # Every parameter redrawn, the (zero-initialised) output layers included: a non-trivial map.
    torch.manual_seed(seed)
    flow = ConditionalCouplingFlow(dim, context_dim).to(DT)
    with torch.no_grad():
        for parameter in flow.parameters():
            parameter.normal_(0.0, scale)
    return flow


def weight_flow() -> ConditionalCouplingFlow:
    """A random flow whose log-scales are constant in z (nonzero, set by the output biases).

    With z-dependent log-scales the tanh saturates in the tails, where the flow then contracts
    by e^-1 per layer; for K = 2 steps that makes the MetFlow weight's variance infinite for
    this base, and a mean check within 4 MCSE meaningless.
    """
    flow = random_flow(2, context_dim=2, scale=0.3, seed=2)
    with torch.no_grad():
        for coupling in flow.couplings:
            coupling.nn.net.layers[-1].weight[1:].zero_()  # outputs: (shift, log-scale)
    return flow


def log_direction_prob(forward: Tensor, logit: Tensor) -> Tensor:
    return torch.where(forward, F.logsigmoid(logit), F.logsigmoid(-logit))


DIRECTION_LOGIT = as_tensor64(math.log(0.3 / 0.7))  # P(propose T) = 0.3


def value_and_grad_mixture(z: Tensor) -> tuple[Tensor, Tensor]:
    return value_and_grad(log_mixture, z)
