"""The three Pyro models of Bayesian linear regression and the posterior predictive."""

__all__ = ["model_hyperprior", "model_known_noise", "model_unknown_noise", "posterior_predictive"]

from collections.abc import Callable

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import Predictive
from torch import Tensor

from pyroext.models.linear_regression.exact import _check_data, _check_positive, _check_prob


def model_known_noise(
    x: Tensor, y: Tensor | None = None, *, noise_scale: float = 1.0, prior_precision: float = 1.0
) -> Tensor:
    """Linear regression with a Gaussian prior and known noise.

    ``w ~ N(0, prior_precision^-1 I_D)``, ``b ~ N(0, prior_precision^-1)`` and
    ``y_n ~ N(x_n^T w + b, noise_scale^2)``.

    Arguments:
        x: Inputs, shape ``(N, D)``.
        y: Targets, shape ``(N,)``, or None to sample them.
        noise_scale: Observation noise standard deviation, > 0.
        prior_precision: Prior precision of every weight and of the bias, > 0.

    Returns:
        The regression mean ``x @ w + b``, shape ``(N,)`` (with any batch dimensions of the
        latents in front).

    Raises:
        ValueError: If ``x`` is not 2-D, ``y`` is not of length ``N``, or a scale is not > 0.
    """
    _check_data(x, y)
    _check_positive(noise_scale=noise_scale, prior_precision=prior_precision)
    prior_scale = x.new_tensor(prior_precision**-0.5)
    return _regression(x, y, prior_scale, x.new_tensor(noise_scale))


def model_hyperprior(
    x: Tensor,
    y: Tensor | None = None,
    *,
    noise_scale: float = 1.0,
    a0: float = 1.0,
    b0: float = 1.0,
) -> Tensor:
    """Linear regression with a Gamma hyperprior on the prior precision and known noise.

    ``alpha ~ Gamma(a0, b0)`` (rate parameterisation), ``w ~ N(0, alpha^-1 I_D)``,
    ``b ~ N(0, alpha^-1)`` and ``y_n ~ N(x_n^T w + b, noise_scale^2)``; ``alpha`` applies to the
    bias too, as in PRML §10.3.

    Arguments:
        x: Inputs, shape ``(N, D)``.
        y: Targets, shape ``(N,)``, or None to sample them.
        noise_scale: Observation noise standard deviation, > 0.
        a0: Shape of the Gamma prior on ``alpha``, > 0.
        b0: Rate of the Gamma prior on ``alpha``, > 0.

    Returns:
        The regression mean ``x @ w + b``.

    Raises:
        ValueError: If ``x`` is not 2-D, ``y`` is not of length ``N``, or a scale is not > 0.
    """
    _check_data(x, y)
    _check_positive(noise_scale=noise_scale, a0=a0, b0=b0)
    alpha = pyro.sample("alpha", dist.Gamma(x.new_tensor(a0), x.new_tensor(b0)))
    return _regression(x, y, alpha.rsqrt(), x.new_tensor(noise_scale))


def model_unknown_noise(
    x: Tensor,
    y: Tensor | None = None,
    *,
    prior_precision: float = 1.0,
    a0: float = 1.0,
    b0: float = 1.0,
) -> Tensor:
    """Linear regression with a conjugate Normal-Gamma prior on the weights and noise precision.

    ``tau ~ Gamma(a0, b0)`` (rate parameterisation), ``w ~ N(0, (tau prior_precision)^-1 I_D)``,
    ``b ~ N(0, (tau prior_precision)^-1)`` and ``y_n ~ N(x_n^T w + b, tau^-1)``.

    Arguments:
        x: Inputs, shape ``(N, D)``.
        y: Targets, shape ``(N,)``, or None to sample them.
        prior_precision: Prior precision of ``theta`` per unit noise precision, > 0.
        a0: Shape of the Gamma prior on the noise precision ``tau``, > 0.
        b0: Rate of the Gamma prior on ``tau``, > 0.

    Returns:
        The regression mean ``x @ w + b``.

    Raises:
        ValueError: If ``x`` is not 2-D, ``y`` is not of length ``N``, or a scale is not > 0.
    """
    _check_data(x, y)
    _check_positive(prior_precision=prior_precision, a0=a0, b0=b0)
    tau = pyro.sample("tau", dist.Gamma(x.new_tensor(a0), x.new_tensor(b0)))
    return _regression(x, y, (tau * prior_precision).rsqrt(), tau.rsqrt())


def _regression(x: Tensor, y: Tensor | None, prior_scale: Tensor, noise_scale: Tensor) -> Tensor:
    """Samples ``w``, ``b`` with standard deviation ``prior_scale`` and observes ``y``."""
    zero = x.new_zeros(())
    # prior_scale carries the batch shape of a sampled precision (particles, vectorised
    # Predictive); the weight event dimension goes to its right.
    weight_prior = dist.Normal(zero, prior_scale[..., None]).expand(
        prior_scale.shape + x.shape[-1:]
    )
    w = pyro.sample("w", weight_prior.to_event(1))
    b = pyro.sample("b", dist.Normal(zero, prior_scale))
    # Equal to x @ w + b for a single draw; with batched draws the data dimension lines up
    # with the rightmost (size-1) batch dimension of w, as Pyro's plates expect.
    mean = (x * w).sum(-1) + b
    with pyro.plate("data", x.shape[0], device=x.device):
        pyro.sample("obs", dist.Normal(mean, noise_scale), obs=y)
    return mean


def posterior_predictive(
    model: Callable[..., object],
    guide: Callable[..., object],
    x_new: Tensor,
    *,
    num_samples: int = 1000,
    prob: float = 0.9,
    **model_kwargs: object,
) -> tuple[Tensor, Tensor, Tensor]:
    """Posterior predictive mean and central interval of new targets from a guide.

    Draws latents from ``guide`` and targets from ``model`` at ``x_new`` with ``y=None`` by
    :class:`pyro.infer.Predictive`.

    Arguments:
        model: One of this module's models (or any model with an ``"obs"`` site).
        guide: A trained guide for ``model``.
        x_new: New inputs, shape ``(K, D)``.
        num_samples: Number of predictive draws, >= 1.
        prob: Mass of the central interval, in (0, 1).
        **model_kwargs: Keyword arguments of ``model`` (``noise_scale``, ...).

    Returns:
        ``(mean, lower, upper)`` of the predictive draws, each of shape ``(K,)``, in the dtype
        of ``x_new``.

    Raises:
        ValueError: If ``num_samples < 1`` or ``prob`` is outside (0, 1).
    """
    if num_samples < 1:
        raise ValueError(f"num_samples={num_samples} must be an integer >= 1")
    _check_prob(prob)
    predictive = Predictive(model, guide=guide, num_samples=num_samples, return_sites=["obs"])
    with torch.no_grad():
        draws = predictive(x_new, y=None, **model_kwargs)["obs"].reshape(num_samples, -1)
    tails = draws.new_tensor([(1 - prob) / 2, (1 + prob) / 2])
    lower, upper = torch.quantile(draws, tails, dim=0)
    return draws.mean(0), lower, upper
