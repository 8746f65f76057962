"""Synthetic data sets with known generating parameters, for checks against the truth."""

__all__ = [
    "SYNTHETIC_COVARIANCES",
    "SYNTHETIC_MEANS",
    "SYNTHETIC_WEIGHTS",
    "synthetic_mixture",
    "synthetic_regression",
]

import torch

from pyroext.data.embedded import TabularData

SYNTHETIC_WEIGHTS = (0.5, 0.3, 0.2)
SYNTHETIC_MEANS = ((-6.0, 0.0), (0.0, 5.0), (6.0, -2.0))
SYNTHETIC_COVARIANCES = (
    ((1.0, 0.3), (0.3, 0.5)),
    ((0.6, -0.2), (-0.2, 1.2)),
    ((0.8, 0.0), (0.0, 0.3)),
)


def synthetic_regression(
    num_data: int = 100, seed: int = 0, dtype: torch.dtype = torch.float32
) -> TabularData:
    """Three standard-normal features, weights (1, -2, 0.5), bias 0.3, noise sd 0.7.

    Arguments:
        num_data: Number of rows.
        seed: Seed of the generator (independent of the global one).
        dtype: Floating point type of the tensors.

    Returns:
        The data set.
    """
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(num_data, 3, generator=generator)
    noise = 0.7 * torch.randn(num_data, generator=generator)
    y = x @ torch.tensor([1.0, -2.0, 0.5]) + 0.3 + noise
    return TabularData(x.to(dtype), y.to(dtype), ("x0", "x1", "x2"), "y")


def synthetic_mixture(
    num_data: int = 2000, seed: int = 123, dtype: torch.dtype = torch.float32
) -> TabularData:
    """Draws from three well-separated 2-D Gaussians with known parameters.

    Weights :data:`SYNTHETIC_WEIGHTS`, means :data:`SYNTHETIC_MEANS` and covariances
    :data:`SYNTHETIC_COVARIANCES`; the features are not standardised.

    Arguments:
        num_data: Number of rows.
        seed: Seed of the generator (independent of the global one).
        dtype: Floating point type of ``x``.

    Returns:
        The data set, without a target.
    """
    generator = torch.Generator().manual_seed(seed)
    weights = torch.tensor(SYNTHETIC_WEIGHTS, dtype=torch.float64)
    labels = torch.multinomial(weights, num_data, replacement=True, generator=generator)
    noise = torch.randn(num_data, 2, generator=generator, dtype=torch.float64)
    chol = torch.linalg.cholesky(torch.tensor(SYNTHETIC_COVARIANCES, dtype=torch.float64))
    x = torch.tensor(SYNTHETIC_MEANS, dtype=torch.float64)[labels]
    x = x + (chol[labels] @ noise.unsqueeze(-1)).squeeze(-1)
    return TabularData(x.to(dtype), None, ("x0", "x1"), None)
