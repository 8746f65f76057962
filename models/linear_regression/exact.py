"""Exact and closed-form references for the Bayesian linear regression models.

Every function works in float64 on the design ``Phi = [x, 1]`` (bias column last), so that the
parameter vector is ``theta = cat([w, b])`` with ``M = D + 1`` entries, and returns float64
tensors or Python floats. The user-facing module is :mod:`pyroext.models.linear_regression`,
which re-exports everything listed here.
"""

__all__ = [
    "GaussianPosterior",
    "NormalGammaPosterior",
    "conjugate_posterior",
    "kl_gaussian",
    "log_evidence_known_noise",
    "log_evidence_unknown_noise",
    "mean_field_optimum",
    "normal_gamma_posterior",
    "predictive_interval_known_noise",
]

import math
from typing import NamedTuple

import pyro.distributions as dist
import torch
from torch import Tensor


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
