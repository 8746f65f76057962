"""Exact and closed-form references for the Bayesian linear regression models.

Every function works in float64 on the design ``Phi = [x, 1]`` (bias column last), so that the
parameter vector is ``theta = cat([w, b])`` with ``M = D + 1`` entries, and returns float64
tensors or Python floats. The user-facing module is :mod:`pyroext.models.linear_regression`,
which re-exports everything listed here.
"""

__all__ = [
    "GaussianPosterior",
    "NormalGammaPosterior",
    "VBResult",
    "conjugate_posterior",
    "kl_gaussian",
    "log_evidence_hyperprior",
    "log_evidence_known_noise",
    "log_evidence_unknown_noise",
    "mean_field_optimum",
    "normal_gamma_posterior",
    "predictive_interval_known_noise",
    "vb_hyperprior",
]

import math
import warnings
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import pyro.distributions as dist
import torch
from scipy import integrate, optimize, special
from torch import Tensor

# The integrand of the 1-D evidence integral is negligible beyond this many nats below its peak.
_TAIL_NATS = 60.0


class GaussianPosterior(NamedTuple):
    """A Gaussian distribution over ``theta = cat([w, b])``.

    Fields:
        mean: Mean, shape ``(D + 1,)``.
        cov: Covariance matrix, shape ``(D + 1, D + 1)``.
        precision: Inverse of ``cov``, shape ``(D + 1, D + 1)``.
    """

    mean: Tensor
    cov: Tensor
    precision: Tensor


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


class NormalGammaPosterior(NamedTuple):
    """Normal-Gamma posterior: ``tau ~ Gamma(a_n, b_n)``, ``theta | tau ~ N(mean, (tau L)^-1)``.

    ``L`` is ``Lambda_n``, the ``precision`` field.

    Fields:
        mean: Mean of ``theta``, shape ``(D + 1,)``.
        precision: ``Lambda_n``, the precision of ``theta`` per unit noise precision.
        a_n: Shape of the noise precision's Gamma posterior.
        b_n: Rate of the noise precision's Gamma posterior.
    """

    mean: Tensor
    precision: Tensor
    a_n: Tensor
    b_n: Tensor

    @property
    def df(self) -> Tensor:
        """Degrees of freedom ``2 a_n`` of the Student-t marginal of ``theta``."""
        return 2 * self.a_n

    @property
    def scale_matrix(self) -> Tensor:
        """Scale matrix ``(b_n / a_n) Lambda_n^-1`` of the Student-t marginal of ``theta``."""
        return (self.b_n / self.a_n) * _inverse_pd(self.precision)

    @property
    def covariance(self) -> Tensor:
        """Covariance ``b_n / (a_n - 1) Lambda_n^-1`` of the marginal of ``theta``.

        Raises:
            ValueError: If ``a_n <= 1``, where the covariance is infinite.
        """
        if self.a_n <= 1:
            raise ValueError(f"a_n={float(self.a_n)} must be > 1 for a finite covariance")
        return self.b_n / (self.a_n - 1) * _inverse_pd(self.precision)

    def marginal(self) -> dist.MultivariateStudentT:
        """The Student-t marginal posterior of ``theta``, with ``tau`` integrated out.

        Beware that Pyro's ``MultivariateStudentT.covariance_matrix`` is the scale matrix, not
        the covariance; use :attr:`covariance` (or the distribution's ``variance``) instead.
        """
        return dist.MultivariateStudentT(
            self.df, self.mean, torch.linalg.cholesky(self.scale_matrix)
        )


def conjugate_posterior(
    x: Tensor, y: Tensor, *, noise_scale: float, prior_precision: float
) -> GaussianPosterior:
    """Exact posterior of ``theta`` under ``model_known_noise``.

    ``precision = prior_precision I + Phi^T Phi / noise_scale^2`` and
    ``mean = precision^-1 Phi^T y / noise_scale^2`` (PRML eqs. 3.53-3.54).

    Arguments:
        x: Inputs, shape ``(N, D)``.
        y: Targets, shape ``(N,)``.
        noise_scale: Observation noise standard deviation, > 0.
        prior_precision: Prior precision of every entry of ``theta``, > 0.

    Returns:
        The Gaussian posterior, float64.

    Raises:
        ValueError: On badly shaped data or non-positive scales.
    """
    _check_positive(noise_scale=noise_scale, prior_precision=prior_precision)
    phi, y = _design(x, y)
    return _gaussian_posterior(phi, y, prior_precision, noise_scale**-2)


def log_evidence_known_noise(
    x: Tensor, y: Tensor, *, noise_scale: float, prior_precision: float
) -> float:
    """Exact log marginal likelihood ``log p(y)`` of ``model_known_noise``.

    With ``alpha = prior_precision``, ``beta = noise_scale^-2`` and the posterior ``N(m, A^-1)``,
    ``log p(y) = M/2 log alpha + N/2 log beta - E(m) - 1/2 log|A| - N/2 log 2 pi`` where
    ``E(m) = beta/2 |y - Phi m|^2 + alpha/2 |m|^2`` (PRML eq. 3.86).

    Arguments:
        x: Inputs, shape ``(N, D)``.
        y: Targets, shape ``(N,)``.
        noise_scale: Observation noise standard deviation, > 0.
        prior_precision: Prior precision of every entry of ``theta``, > 0.

    Returns:
        ``log p(y)`` in nats.

    Raises:
        ValueError: On badly shaped data or non-positive scales.
    """
    _check_positive(noise_scale=noise_scale, prior_precision=prior_precision)
    phi, y = _design(x, y)
    (n, m), beta = phi.shape, noise_scale**-2
    posterior = _gaussian_posterior(phi, y, prior_precision, beta)
    fit = (y - phi @ posterior.mean).square().sum()
    energy = (beta * fit + prior_precision * posterior.mean.square().sum()) / 2
    value = (
        m * math.log(prior_precision) / 2
        + n * math.log(beta) / 2
        - energy
        - _logdet_pd(posterior.precision) / 2
        - n * math.log(2 * math.pi) / 2
    )
    return float(value)


def mean_field_optimum(posterior: GaussianPosterior) -> GaussianPosterior:
    """The fully factorised Gaussian closest in ``KL(q || posterior)`` to a Gaussian posterior.

    Minimising ``KL(q || p)`` over diagonal ``q`` keeps the mean and sets each variance to the
    inverse of the matching diagonal entry of the precision (PRML §10.1.2, eq. 10.13).

    Arguments:
        posterior: The Gaussian target.

    Returns:
        The optimal diagonal Gaussian.
    """
    diagonal = posterior.precision.diagonal()
    return GaussianPosterior(
        posterior.mean.clone(), torch.diag(diagonal.reciprocal()), torch.diag(diagonal)
    )


def kl_gaussian(q_mean: Tensor, q_cov: Tensor, p_mean: Tensor, p_cov: Tensor) -> float:
    """Closed-form ``KL(N(q_mean, q_cov) || N(p_mean, p_cov))`` in float64.

    ``KL = 1/2 [tr(P^-1 Q) + (mu_p - mu_q)^T P^-1 (mu_p - mu_q) - k + log|P| - log|Q|]``.

    Arguments:
        q_mean: Mean of ``q``, shape ``(k,)``.
        q_cov: Covariance of ``q``, shape ``(k, k)``, positive definite.
        p_mean: Mean of ``p``, shape ``(k,)``.
        p_cov: Covariance of ``p``, shape ``(k, k)``, positive definite.

    Returns:
        The divergence in nats.

    Raises:
        ValueError: If the shapes do not describe two ``k``-dimensional Gaussians.
    """
    k = q_mean.shape[-1]
    shapes = [tuple(t.shape) for t in (q_mean, q_cov, p_mean, p_cov)]
    if shapes != [(k,), (k, k), (k,), (k, k)]:
        raise ValueError(f"means (k,) and covariances (k, k) expected, got shapes {shapes}")
    q_chol = torch.linalg.cholesky(q_cov.double())
    p_chol = torch.linalg.cholesky(p_cov.double())
    whitened = torch.linalg.solve_triangular(p_chol, q_chol, upper=False)
    delta = torch.linalg.solve_triangular(
        p_chol, (p_mean.double() - q_mean.double())[:, None], upper=False
    )
    log_ratio = 2 * (p_chol.diagonal().log().sum() - q_chol.diagonal().log().sum())
    return float((whitened.square().sum() + delta.square().sum() - k + log_ratio) / 2)


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


def normal_gamma_posterior(
    x: Tensor, y: Tensor, *, prior_precision: float, a0: float, b0: float
) -> NormalGammaPosterior:
    """Exact Normal-Gamma posterior of ``(theta, tau)`` under ``model_unknown_noise``.

    ``Lambda_n = prior_precision I + Phi^T Phi``, ``mean = Lambda_n^-1 Phi^T y``,
    ``a_n = a0 + N/2`` and ``b_n = b0 + (|y - Phi mean|^2 + prior_precision |mean|^2) / 2``.

    Arguments:
        x: Inputs, shape ``(N, D)``.
        y: Targets, shape ``(N,)``.
        prior_precision: Prior precision of ``theta`` per unit noise precision, > 0.
        a0: Shape of the Gamma prior on the noise precision ``tau``, > 0.
        b0: Rate of that prior, > 0.

    Returns:
        The posterior, float64.

    Raises:
        ValueError: On badly shaped data or non-positive scales.
    """
    _check_positive(prior_precision=prior_precision, a0=a0, b0=b0)
    phi, y = _design(x, y)
    gaussian = _gaussian_posterior(phi, y, prior_precision, 1.0)
    fit = (y - phi @ gaussian.mean).square().sum()
    b_n = b0 + (fit + prior_precision * gaussian.mean.square().sum()) / 2
    a_n = phi.new_tensor(a0 + phi.shape[0] / 2)
    return NormalGammaPosterior(gaussian.mean, gaussian.precision, a_n, b_n)


def log_evidence_unknown_noise(
    x: Tensor, y: Tensor, *, prior_precision: float, a0: float, b0: float
) -> float:
    """Exact log marginal likelihood of ``model_unknown_noise``.

    ``log p(y) = -N/2 ln 2 pi + M/2 ln lambda_0 - 1/2 ln|Lambda_n| + a0 ln b0 - a_n ln b_n
    + ln Gamma(a_n) - ln Gamma(a0)`` with ``lambda_0 = prior_precision``.

    Arguments:
        x: Inputs, shape ``(N, D)``.
        y: Targets, shape ``(N,)``.
        prior_precision: Prior precision of ``theta`` per unit noise precision, > 0.
        a0: Shape of the Gamma prior on the noise precision ``tau``, > 0.
        b0: Rate of that prior, > 0.

    Returns:
        ``log p(y)`` in nats.

    Raises:
        ValueError: On badly shaped data or non-positive scales.
    """
    post = normal_gamma_posterior(x, y, prior_precision=prior_precision, a0=a0, b0=b0)
    n, m = x.shape[0], post.mean.shape[0]
    a_n, b_n = float(post.a_n), float(post.b_n)
    value = (
        -n / 2 * math.log(2 * math.pi)
        + m / 2 * math.log(prior_precision)
        - _logdet_pd(post.precision) / 2
        + a0 * math.log(b0)
        - a_n * math.log(b_n)
        + math.lgamma(a_n)
        - math.lgamma(a0)
    )
    return float(value)


def predictive_interval_known_noise(
    posterior: GaussianPosterior, x_new: Tensor, *, noise_scale: float, prob: float = 0.9
) -> tuple[Tensor, Tensor, Tensor]:
    """Exact posterior predictive mean and central interval of new targets with known noise.

    ``y_new ~ N(phi^T mean, phi^T cov phi + noise_scale^2)`` with ``phi = [x_new, 1]``.

    Arguments:
        posterior: Gaussian posterior of ``theta``, e.g. from :func:`conjugate_posterior`.
        x_new: New inputs, shape ``(K, D)``.
        noise_scale: Observation noise standard deviation, > 0.
        prob: Mass of the central interval, in (0, 1).

    Returns:
        ``(mean, lower, upper)``, each of shape ``(K,)``, float64.

    Raises:
        ValueError: On badly shaped inputs, a non-positive scale or ``prob`` outside (0, 1).
    """
    _check_positive(noise_scale=noise_scale)
    _check_prob(prob)
    phi, _ = _design(x_new, None)
    if phi.shape[1] != posterior.mean.shape[0]:
        raise ValueError(
            f"x_new has {phi.shape[1] - 1} columns but the posterior is over "
            f"{posterior.mean.shape[0] - 1} weights and a bias"
        )
    mean_theta, cov = posterior.mean.double(), posterior.cov.double()
    mean = phi @ mean_theta
    sd = (((phi @ cov) * phi).sum(-1) + noise_scale**2).sqrt()
    z = dist.Normal(mean.new_zeros(()), 1.0).icdf(mean.new_tensor((1 + prob) / 2))
    return mean, mean - z * sd, mean + z * sd


def _check_data(x: Tensor, y: Tensor | None) -> None:
    """Raises ValueError unless ``x`` is ``(N, D)`` and ``y`` is None or ``(N,)``."""
    if not isinstance(x, Tensor) or x.ndim != 2:
        shape = tuple(getattr(x, "shape", ()))
        raise ValueError(f"x must be a 2-D tensor of shape (N, D), got shape {shape}")
    if y is not None and (not isinstance(y, Tensor) or tuple(y.shape) != (x.shape[0],)):
        shape = tuple(getattr(y, "shape", ()))
        raise ValueError(f"y must be a tensor of shape (N,) = ({x.shape[0]},), got {shape}")


def _check_positive(**values: float) -> None:
    """Raises ValueError naming the first argument that is not a finite number > 0."""
    for name, value in values.items():
        if not (math.isfinite(float(value)) and float(value) > 0):
            raise ValueError(f"{name}={value} must be a finite number > 0")


def _check_prob(prob: float) -> None:
    """Raises ValueError unless ``prob`` lies in (0, 1)."""
    if not 0 < prob < 1:
        raise ValueError(f"prob={prob} must be in (0, 1)")


def _design(x: Tensor, y: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """Validated float64 design ``[x, 1]`` and targets."""
    _check_data(x, y)
    x = x.double()
    phi = torch.cat([x, x.new_ones(x.shape[0], 1)], dim=1)
    return phi, None if y is None else y.double()


def _gaussian_posterior(
    phi: Tensor, y: Tensor, prior_precision: float, beta: float
) -> GaussianPosterior:
    """Posterior of ``theta ~ N(0, prior_precision^-1 I)`` with ``y ~ N(Phi theta, beta^-1 I)``."""
    eye = torch.eye(phi.shape[1], dtype=phi.dtype, device=phi.device)
    precision = beta * (phi.T @ phi) + prior_precision * eye
    chol = torch.linalg.cholesky(precision)
    mean = torch.cholesky_solve((beta * (phi.T @ y))[:, None], chol)[:, 0]
    return GaussianPosterior(mean, torch.cholesky_inverse(chol), precision)


def _logdet_pd(matrix: Tensor) -> float:
    return float(2 * torch.linalg.cholesky(matrix).diagonal().log().sum())


def _inverse_pd(matrix: Tensor) -> Tensor:
    return torch.cholesky_inverse(torch.linalg.cholesky(matrix))
