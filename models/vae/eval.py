"""Test log-likelihood of a VAE by importance sampling from its encoder (Burda et al.).

``log p(x) ≈ log (1/K) sum_k p(x, z_k) / q(z_k | x)`` with ``z_k ~ q(z | x)``: a stochastic lower
bound that tightens as ``K`` grows (``K = 1`` is the ELBO), computed in chunks of samples and
images so that ``K = 5000`` fits in memory, with a running log-sum-exp.
"""

__all__ = ["importance_log_likelihood", "log_importance_weights"]

import math

import torch
from torch import Tensor
from torch.distributions import Normal

from pyroext.checks import check_counts
from pyroext.models.vae.model import VAE


def log_importance_weights(vae: VAE, x: Tensor, z: Tensor) -> Tensor:
    """``log p(x, z) - log q(z | x)`` for draws ``z`` of shape ``(S, B, L)``; returns ``(S, B)``.

    Arguments:
        vae: The VAE.
        x: Images ``(B, D)``.
        z: Latents ``(S, B, L)``.

    Returns:
        The log importance weights, unscaled (one image each).
    """
    loc, scale = vae.encoder(x)
    return _log_weights(vae, x, z, loc, scale)


def _log_weights(vae: VAE, x: Tensor, z: Tensor, loc: Tensor, scale: Tensor) -> Tensor:
    return vae.log_joint(x, z) - Normal(loc, scale).log_prob(z).sum(-1)


@torch.no_grad()
def importance_log_likelihood(
    vae: VAE,
    x: Tensor,
    num_samples: int = 5000,
    *,
    sample_chunk: int = 500,
    data_chunk: int = 100,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Per-image importance-sampled ``log p(x)`` with ``num_samples`` encoder draws.

    Arguments:
        vae: The VAE (its encoder is the proposal).
        x: Images ``(N, D)``.
        num_samples: ``K``, >= 1 (Burda et al. use 5000).
        sample_chunk: Draws evaluated at once, >= 1.
        data_chunk: Images evaluated at once, >= 1.
        generator: Generator of the draws (on ``x``'s device), for reproducible estimates.

    Returns:
        ``(N,)`` estimates; their negative mean is the test NLL in nats.

    Raises:
        ValueError: If a count is not a positive integer.
    """
    check_counts(num_samples=num_samples, sample_chunk=sample_chunk, data_chunk=data_chunk)
    parts = [
        _chunked_estimate(vae, batch, num_samples, sample_chunk, generator)
        for batch in x.split(data_chunk)
    ]
    return torch.cat(parts)


def _chunked_estimate(
    vae: VAE, x: Tensor, num_samples: int, sample_chunk: int, generator: torch.Generator | None
) -> Tensor:
    loc, scale = vae.encoder(x)
    total = torch.full((x.shape[0],), -math.inf, dtype=loc.dtype, device=loc.device)
    for start in range(0, num_samples, sample_chunk):
        size = min(sample_chunk, num_samples - start)
        noise = torch.randn(
            size, *loc.shape, generator=generator, dtype=loc.dtype, device=loc.device
        )
        log_weights = _log_weights(vae, x, loc + scale * noise, loc, scale)
        total = torch.logaddexp(total, torch.logsumexp(log_weights, 0))
    return total - math.log(num_samples)
