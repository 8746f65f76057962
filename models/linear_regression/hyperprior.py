"""References for the hyperprior model: mean-field variational Bayes and the exact evidence.

Both work in float64 on the design ``Phi = [x, 1]`` of
:mod:`~pyroext.models.linear_regression.exact`.
"""

__all__ = ["VBResult", "log_evidence_hyperprior", "vb_hyperprior"]

import math
import warnings
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch
from scipy import integrate, optimize, special
from torch import Tensor

from pyroext.models.linear_regression.exact import (
    GaussianPosterior,
    _check_positive,
    _design,
    _gaussian_posterior,
    _logdet_pd,
)

# The integrand of the 1-D evidence integral is negligible beyond this many nats below its peak.
_TAIL_NATS = 60.0


class VBResult(NamedTuple):
    """Outcome of :func:`vb_hyperprior`: ``q(theta) q(alpha)`` and its lower bound history.

    Fields:
        posterior: The Gaussian factor ``q(theta)``.
        a_n: Shape of the Gamma factor ``q(alpha) = Gamma(a_n, b_n)`` (rate parameterisation).
        b_n: Rate of ``q(alpha)``.
        elbos: Evidence lower bound after each sweep of updates, shape ``(iterations,)``.
    """

    posterior: GaussianPosterior
    a_n: Tensor
    b_n: Tensor
    elbos: Tensor


def vb_hyperprior(
    x: Tensor,
    y: Tensor,
    *,
    noise_scale: float,
    a0: float,
    b0: float,
    max_iter: int = 500,
    tol: float = 1e-10,
) -> VBResult:
    """Mean-field variational Bayes ``q(theta) q(alpha)`` for ``model_hyperprior``.

    Coordinate ascent alternates, from ``E[alpha] = a0 / b0`` (PRML eqs. 10.92-10.95, with
    ``beta = noise_scale^-2`` and ``M = D + 1`` parameters including the bias)::

        q(theta) = N(m_N, S_N),  S_N^-1 = E[alpha] I + beta Phi^T Phi,  m_N = beta S_N Phi^T y
        q(alpha) = Gamma(a_N, b_N),  a_N = a0 + M/2,  b_N = b0 + (m_N^T m_N + tr S_N) / 2

    After each sweep the lower bound ``L = E[ln p(y|theta)] + E[ln p(theta|alpha)]
    + E[ln p(alpha)] - E[ln q(theta)] - E[ln q(alpha)]`` is evaluated in closed form, with
    ``E[alpha] = a_N / b_N`` and ``E[ln alpha] = psi(a_N) - ln b_N`` (PRML eqs. 10.107-10.112)::

        E[ln p(y|theta)]     = N/2 ln(beta / 2 pi) - beta/2 (|y - Phi m_N|^2 + tr(Phi^T Phi S_N))
        E[ln p(theta|alpha)] = -M/2 ln 2 pi + M/2 E[ln alpha] - E[alpha]/2 (m_N^T m_N + tr S_N)
        E[ln p(alpha)]       = a0 ln b0 + (a0 - 1) E[ln alpha] - b0 E[alpha] - ln Gamma(a0)
        -E[ln q(theta)]      = 1/2 ln|S_N| + M/2 (1 + ln 2 pi)
        -E[ln q(alpha)]      = ln Gamma(a_N) - (a_N - 1) psi(a_N) - ln b_N + a_N

    Each update maximises ``L`` over one factor, so the bound never decreases.

    Arguments:
        x: Inputs, shape ``(N, D)``.
        y: Targets, shape ``(N,)``.
        noise_scale: Known observation noise standard deviation, > 0.
        a0: Shape of the Gamma prior on the weight precision ``alpha``, > 0.
        b0: Rate of that prior, > 0.
        max_iter: Maximum number of sweeps, >= 1.
        tol: Stop once the bound changes by less than this between sweeps.

    Returns:
        The factors after the last sweep and the bound after every sweep; a RuntimeWarning is
        issued if ``max_iter`` sweeps did not reach ``tol``.

    Raises:
        ValueError: On badly shaped data, non-positive scales or ``max_iter < 1``.

    References:
        Bishop, C. M. (2006). Pattern Recognition and Machine Learning, §10.3 "Variational
        linear regression", eqs. 10.92-10.95 and 10.107-10.112. Springer.
    """
    _check_positive(noise_scale=noise_scale, a0=a0, b0=b0)
    if max_iter < 1:
        raise ValueError(f"max_iter={max_iter} must be an integer >= 1")
    phi, y = _design(x, y)
    beta, a_n, e_alpha = noise_scale**-2, a0 + phi.shape[1] / 2, a0 / b0
    elbos: list[float] = []
    for _ in range(max_iter):
        posterior = _gaussian_posterior(phi, y, e_alpha, beta)
        b_n = b0 + float(posterior.mean.square().sum() + posterior.cov.trace()) / 2
        e_alpha = a_n / b_n
        elbos.append(_vb_elbo(phi, y, beta, posterior, (a0, b0), (a_n, b_n)))
        if len(elbos) > 1 and abs(elbos[-1] - elbos[-2]) < tol:
            break
    else:
        message = f"vb_hyperprior did not converge to tol={tol} in {max_iter} sweeps"
        warnings.warn(message, RuntimeWarning, stacklevel=2)
    as_tensor = phi.new_tensor
    return VBResult(posterior, as_tensor(a_n), as_tensor(b_n), as_tensor(elbos))


def _vb_elbo(
    phi: Tensor,
    y: Tensor,
    beta: float,
    q_theta: GaussianPosterior,
    prior: tuple[float, float],
    q_alpha: tuple[float, float],
) -> float:
    """Closed-form lower bound of :func:`vb_hyperprior` (PRML eqs. 10.107-10.112)."""
    (n, m), (a0, b0), (a_n, b_n) = phi.shape, prior, q_alpha
    e_alpha, e_log_alpha = a_n / b_n, special.digamma(a_n) - math.log(b_n)
    log_2pi = math.log(2 * math.pi)
    mean, cov = q_theta.mean, q_theta.cov
    fit = (y - phi @ mean).square().sum() + ((phi.T @ phi) * cov).sum()
    e_sq_norm = float(mean.square().sum() + cov.trace())
    log_lik = n / 2 * (math.log(beta) - log_2pi) - beta / 2 * float(fit)
    log_prior_theta = -m / 2 * log_2pi + m / 2 * e_log_alpha - e_alpha / 2 * e_sq_norm
    log_prior_alpha = a0 * math.log(b0) + (a0 - 1) * e_log_alpha - b0 * e_alpha - math.lgamma(a0)
    entropy_theta = -_logdet_pd(q_theta.precision) / 2 + m / 2 * (1 + log_2pi)
    entropy_alpha = math.lgamma(a_n) - (a_n - 1) * special.digamma(a_n) - math.log(b_n) + a_n
    return log_lik + log_prior_theta + log_prior_alpha + entropy_theta + entropy_alpha


def log_evidence_hyperprior(
    x: Tensor, y: Tensor, *, noise_scale: float, a0: float, b0: float
) -> float:
    """Exact log marginal likelihood of ``model_hyperprior`` by 1-D quadrature.

    ``p(y) = int N(y | 0, noise_scale^2 I + alpha^-1 Phi Phi^T) Gamma(alpha | a0, b0) d alpha``.
    With the thin SVD ``Phi = U diag(s) V^T``, ``g = U^T y`` and ``r = |y - U g|^2``, the
    Gaussian's log-determinant is ``N ln sigma^2 + sum ln(1 + beta s^2 / alpha)`` and its
    quadratic form ``beta r + sum beta alpha g^2 / (alpha + beta s^2)``, ``O(M)`` per ``alpha``.
    The integral runs over ``ln alpha``, scaled by its peak, to relative accuracy ~1e-11.

    Arguments:
        x: Inputs, shape ``(N, D)``.
        y: Targets, shape ``(N,)``.
        noise_scale: Known observation noise standard deviation, > 0.
        a0: Shape of the Gamma prior on the weight precision ``alpha``, > 0.
        b0: Rate of that prior, > 0.

    Returns:
        ``log p(y)`` in nats.

    Raises:
        ValueError: On badly shaped data or non-positive scales.
    """
    _check_positive(noise_scale=noise_scale, a0=a0, b0=b0)
    phi, y = _design(x, y)
    u, s, _ = torch.linalg.svd(phi, full_matrices=False)
    g = u.T @ y
    rss = float((y - u @ g).square().sum())
    s2, g2 = s.square().cpu().numpy(), g.square().cpu().numpy()
    n, beta = phi.shape[0], noise_scale**-2
    log_gaussian_norm = -n / 2 * math.log(2 * math.pi * noise_scale**2)
    log_gamma_norm = a0 * math.log(b0) - math.lgamma(a0)

    def log_integrand(t: float) -> float:
        alpha = math.exp(t)
        log_det = np.log1p(beta * s2 / alpha).sum()
        quadratic = beta * rss + (beta * alpha * g2 / (alpha + beta * s2)).sum()
        return float(-(log_det + quadratic) / 2 + a0 * t - b0 * alpha)

    return log_gaussian_norm + log_gamma_norm + _log_integral(log_integrand, math.log(a0 / b0))


def _log_integral(log_f: Callable[[float], float], start: float) -> float:
    """``log int exp(log_f(t)) dt`` for a unimodal ``log_f`` that decays on both sides."""
    peak = optimize.minimize_scalar(lambda t: -log_f(t), bracket=(start - 1, start + 1)).x
    top = log_f(peak)
    edges = []
    for direction in (-1.0, 1.0):
        step = 1e-6
        while log_f(peak + direction * step) > top - _TAIL_NATS:
            step *= 2
        edges.append(peak + direction * step)
    value, _ = integrate.quad(
        lambda t: math.exp(log_f(t) - top), *edges, points=[peak], epsabs=0, epsrel=1e-11
    )
    return top + math.log(value)
