"""Shared pieces of the exact linear regression tests: the data's noise scale, the Monte Carlo
sample size, the design matrix, a one-dimensional quadrature and a Monte Carlo tolerance."""

__all__ = [
    "F64",
    "NOISE",
    "NUM_DRAWS",
    "design",
    "log_integral_over_log_scale",
    "scalar",
    "standardize",
    "within_mc_error",
]

import torch

F64 = torch.float64
NOISE = 0.7
NUM_DRAWS = 200_000


def standardize(values: torch.Tensor) -> torch.Tensor:
    # Population sd (divide by N), as pyroext.data.load_diabetes does.
    return (values - values.mean(0)) / values.std(0, correction=0)


def design(x: torch.Tensor) -> torch.Tensor:
    """The features with a column of ones for the intercept."""
    return torch.cat([x, torch.ones(x.shape[0], 1, dtype=x.dtype)], dim=1)


def scalar(value: float) -> torch.Tensor:
    return torch.tensor(value, dtype=F64)


def log_integral_over_log_scale(log_f, center: float, half_width: float = 20.0) -> float:
    """log int_0^inf exp(log_f(s)) ds by the trapezoid rule on a grid in log s.

    For a smooth integrand that vanishes at both ends of the grid the rule converges
    exponentially fast in the number of points.
    """
    log_s = torch.linspace(center - half_width, center + half_width, 2001, dtype=F64)
    log_values = log_f(log_s.exp()) + log_s  # ds = s d(log s)
    top = log_values.max()
    return float(top + torch.trapezoid((log_values - top).exp(), log_s).log())


def within_mc_error(estimate: torch.Tensor, exact: torch.Tensor, se: torch.Tensor) -> bool:
    return bool(((estimate - exact).abs() <= 4 * se).all())
