"""Mean-field variational Bayes for the conjugate Dirichlet / Normal-Wishart Gaussian mixture.

Plain torch (no Pyro), float64: CAVI updates and the closed-form lower bound of Bishop, PRML
section 10.2; :func:`vb_gmm` returns the bound's history so that callers can check its ascent.
"""

__all__ = ["VBFactors", "VBPrior", "VBResult", "vb_gmm", "vb_lower_bound"]

import math
from typing import NamedTuple

import torch
from torch import Tensor

from pyroext.models.gmm.em import check_gmm_data, log_dirichlet_norm, seed_means

_LOG_2PI = math.log(2 * math.pi)


class VBPrior(NamedTuple):
    """The conjugate prior ``Dirichlet(alpha0 1) prod_k N(m0, (beta0 Lambda_k)^-1)
    Wishart(Lambda_k | w0, nu0)`` of :func:`vb_gmm`.

    Fields:
        alpha0: Dirichlet concentration.
        beta0: Precision scaling of the means.
        m0: Mean location, shape ``(D,)``.
        w0: Wishart scale matrix, shape ``(D, D)``.
        nu0: Wishart degrees of freedom.
    """

    alpha0: float
    beta0: float
    m0: Tensor
    w0: Tensor
    nu0: float


class VBFactors(NamedTuple):
    """The factors ``q(pi) = Dirichlet(alpha)`` and ``q(mu_k, Lambda_k) = N(mu_k | m_k,
    (beta_k Lambda_k)^-1) Wishart(Lambda_k | w_k, nu_k)``, fields as in :class:`VBResult`."""

    alpha: Tensor
    beta: Tensor
    m: Tensor
    w: Tensor
    nu: Tensor


class VBResult(NamedTuple):
    """Outcome of :func:`vb_gmm`: ``q(pi) q(mu, Lambda)`` and the responsibilities ``q(Z)``.

    ``q(pi) = Dirichlet(alpha)`` and ``q(mu_k, Lambda_k) = N(mu_k | m_k, (beta_k Lambda_k)^-1)
    Wishart(Lambda_k | w_k, nu_k)``; ``q(z_n) = Categorical(responsibilities[n])``.

    Fields:
        alpha: Dirichlet concentrations, shape ``(K,)``.
        beta: Mean precision scalings, shape ``(K,)``.
        m: Mean locations, shape ``(K, D)``.
        w: Wishart scale matrices, shape ``(K, D, D)``.
        nu: Wishart degrees of freedom, shape ``(K,)``.
        responsibilities: The ``q(Z)`` from which the returned ``q(pi) q(mu, Lambda)`` were
            computed, shape ``(N, K)``; together they attain ``elbo``.
        elbo: Evidence lower bound (PRML eqs. 10.70-10.77) of the returned factors.
        history: Lower bound after each full sweep, shape ``(iterations,)``.
        iterations: Number of sweeps run.
    """

    alpha: Tensor
    beta: Tensor
    m: Tensor
    w: Tensor
    nu: Tensor
    responsibilities: Tensor
    elbo: float
    history: Tensor
    iterations: int

    @property
    def factors(self) -> VBFactors:
        """The returned ``q(pi) q(mu, Lambda)``, for :func:`vb_lower_bound`."""
        return VBFactors(self.alpha, self.beta, self.m, self.w, self.nu)


def vb_gmm(
    x: Tensor,
    k: int,
    *,
    alpha0: float = 1.0,
    beta0: float = 1.0,
    m0: Tensor | None = None,
    w0: Tensor | None = None,
    nu0: float | None = None,
    max_iter: int = 1000,
    tol: float = 1e-10,
    seed: int = 0,
) -> VBResult:
    """Mean-field variational Bayes (CAVI) for the Dirichlet / Normal-Wishart mixture.

    Model (PRML §10.2): ``pi ~ Dirichlet(alpha0 1)``, ``Lambda_k ~ Wishart(w0, nu0)``,
    ``mu_k | Lambda_k ~ N(m0, (beta0 Lambda_k)^-1)``, ``z_n ~ Categorical(pi)`` and
    ``x_n | z_n = k ~ N(mu_k, Lambda_k^-1)``. Defaults: ``m0`` the data mean, ``w0`` the inverse
    of the (population) data covariance divided by ``D`` (so ``E[Lambda_k] = nu0 w0`` is the
    data precision), and ``nu0 = D``. The responsibilities start one-hot at the nearest of ``k``
    k-means++ seeds drawn with ``seed``. Each sweep updates ``q(pi) q(mu, Lambda)`` from the
    responsibilities (eqs. 10.58-10.63), evaluates the bound (eqs. 10.70-10.77), then updates
    the responsibilities (eqs. 10.46-10.49, 10.64-10.66). Iteration stops once the bound
    changes by less than ``tol`` per data point.

    Arguments:
        x: Data, shape ``(N, D)``.
        k: Number of components, in ``[1, N]``.
        alpha0: Dirichlet concentration, > 0.
        beta0: Prior precision scaling of the means, > 0.
        m0: Prior mean location, shape ``(D,)``.
        w0: Wishart scale matrix, symmetric positive definite, shape ``(D, D)``.
        nu0: Wishart degrees of freedom, > D - 1.
        max_iter: Maximum number of sweeps, >= 1.
        tol: Convergence threshold on the bound change per data point, >= 0.
        seed: Seed of the initialisation generator.

    Returns:
        The :class:`VBResult`.

    Raises:
        ValueError: On invalid data, ``k`` or hyperparameters.

    References:
        Bishop, C. M. (2006). Pattern Recognition and Machine Learning, §10.2 "Illustration:
        Variational Mixture of Gaussians", eqs. 10.46-10.77. Springer.
        Attias, H. (2000). A variational Bayesian framework for graphical models. NIPS 12.
    """
    check_gmm_data(x, k)
    x = x.double()
    hyper = _vb_hyper(x, alpha0, beta0, m0, w0, nu0)
    if max_iter < 1 or tol < 0:
        raise ValueError(f"max_iter={max_iter} must be >= 1 and tol={tol} must be >= 0")
    centres = seed_means(x, k, torch.Generator().manual_seed(seed), "kmeans++")
    resp = torch.nn.functional.one_hot(torch.cdist(x, centres).argmin(1), k).double()
    q = _vb_m_step(x, resp, hyper)
    history = [vb_lower_bound(x, resp, q, hyper)]
    for _ in range(max_iter - 1):
        resp = _vb_e_step(x, q)
        q = _vb_m_step(x, resp, hyper)
        history.append(vb_lower_bound(x, resp, q, hyper))
        if abs(history[-1] - history[-2]) < tol * x.shape[0]:
            break
    return VBResult(*q, resp, history[-1], torch.tensor(history, dtype=x.dtype), len(history))


def vb_lower_bound(x: Tensor, resp: Tensor, factors: VBFactors, prior: VBPrior) -> float:
    """Closed-form evidence lower bound of the variational mixture (PRML eqs. 10.70-10.77).

    Valid for any responsibilities and any factor parameters, not only CAVI fixed points.

    Arguments:
        x: Data, shape ``(N, D)``, float64.
        resp: Responsibilities ``q(Z)``, shape ``(N, K)``.
        factors: ``q(pi) q(mu, Lambda)``.
        prior: The hyperparameters.

    Returns:
        ``E_q[log p(X, Z, pi, mu, Lambda)] - E_q[log q(Z, pi, mu, Lambda)]`` in nats.

    References:
        Bishop, C. M. (2006). Pattern Recognition and Machine Learning, eqs. 10.70-10.77.
    """
    alpha, beta, m, w, nu = factors
    alpha0, beta0, m0, w0, nu0 = prior
    d, k = x.shape[1], resp.shape[1]
    nk, xbar, s = _vb_stats(x, resp)
    log_lam, log_pi = _log_lambda_tilde(w, nu), _log_pi_tilde(alpha)
    dx = xbar - m
    e_lik = (
        0.5
        * (
            nk
            * (
                log_lam
                - d / beta
                - nu * _trace(s @ w)
                - nu * torch.einsum("ki,kij,kj->k", dx, w, dx)
                - d * _LOG_2PI
            )
        ).sum()
    )
    e_z = (resp * log_pi).sum()
    e_pi = log_dirichlet_norm(torch.full_like(alpha, alpha0)) + (alpha0 - 1) * log_pi.sum()
    dm = m - m0
    w0_inv = torch.linalg.inv(w0)
    e_mu_lam = (
        0.5
        * (
            d * math.log(beta0 / (2 * math.pi))
            + log_lam
            - d * beta0 / beta
            - beta0 * nu * torch.einsum("ki,kij,kj->k", dm, w, dm)
        ).sum()
    )
    e_mu_lam = e_mu_lam + k * _log_wishart_norm(w0, torch.tensor(nu0, dtype=x.dtype))
    e_mu_lam = e_mu_lam + (nu0 - d - 1) / 2 * log_lam.sum() - 0.5 * (nu * _trace(w0_inv @ w)).sum()
    e_qz = torch.special.xlogy(resp, resp).sum()
    e_qpi = ((alpha - 1) * log_pi).sum() + log_dirichlet_norm(alpha)
    entropy_lam = -_log_wishart_norm(w, nu) - (nu - d - 1) / 2 * log_lam + nu * d / 2
    e_qmu_lam = 0.5 * log_lam + d / 2 * torch.log(beta / (2 * math.pi)) - d / 2 - entropy_lam
    total = e_lik + e_z + e_pi + e_mu_lam - e_qz - e_qpi - e_qmu_lam.sum()
    return float(total)


# ---------------------------------------------------------------------------------------------
# CAVI internals


def _vb_hyper(
    x: Tensor,
    alpha0: float,
    beta0: float,
    m0: Tensor | None,
    w0: Tensor | None,
    nu0: float | None,
) -> VBPrior:
    """Validated hyperparameters with defaults filled in."""
    d = x.shape[1]
    for name, value in (("alpha0", alpha0), ("beta0", beta0)):
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name}={value} must be a finite number > 0")
    m0 = x.mean(0) if m0 is None else torch.as_tensor(m0, dtype=x.dtype)
    if tuple(m0.shape) != (d,):
        raise ValueError(f"m0 must have shape (D,) = ({d},), got {tuple(m0.shape)}")
    if w0 is None:
        cov = torch.cov(x.T, correction=0).reshape(d, d)
        pd = x.shape[0] > d and bool(torch.linalg.cholesky_ex(cov).info == 0)
        w0 = torch.linalg.inv(cov) / d if pd else torch.eye(d, dtype=x.dtype)
    w0 = torch.as_tensor(w0, dtype=x.dtype)
    if tuple(w0.shape) != (d, d) or torch.linalg.cholesky_ex(w0).info != 0:
        raise ValueError(f"w0 must be a symmetric positive definite ({d}, {d}) matrix")
    nu0 = float(d) if nu0 is None else float(nu0)
    if not nu0 > d - 1:
        raise ValueError(f"nu0={nu0} must be > D - 1 = {d - 1}")
    return VBPrior(float(alpha0), float(beta0), m0, w0, nu0)


def _vb_stats(x: Tensor, resp: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``N_k``, ``xbar_k`` and ``S_k`` of PRML eqs. 10.51-10.53 (empty components give 0)."""
    nk = resp.sum(0)
    safe = nk.clamp_min(torch.finfo(x.dtype).tiny)
    xbar = (resp.T @ x) / safe.unsqueeze(1)
    diff = x.unsqueeze(0) - xbar.unsqueeze(1)
    s = torch.einsum("nk,kni,knj->kij", resp, diff, diff) / safe[:, None, None]
    return nk, xbar, s


def _vb_m_step(x: Tensor, resp: Tensor, hyper: VBPrior) -> VBFactors:
    """``q(pi) q(mu, Lambda)`` from the responsibilities, PRML eqs. 10.58-10.63."""
    alpha0, beta0, m0, w0, nu0 = hyper
    nk, xbar, s = _vb_stats(x, resp)
    alpha, beta, nu = alpha0 + nk, beta0 + nk, nu0 + nk
    m = (beta0 * m0 + nk.unsqueeze(1) * xbar) / beta.unsqueeze(1)
    dx = xbar - m0
    outer = dx.unsqueeze(2) * dx.unsqueeze(1)
    coef = (beta0 * nk / (beta0 + nk))[:, None, None]
    w_inv = torch.linalg.inv(w0) + nk[:, None, None] * s + coef * outer
    w = torch.linalg.inv(0.5 * (w_inv + w_inv.transpose(1, 2)))
    return VBFactors(alpha, beta, m, 0.5 * (w + w.transpose(1, 2)), nu)


def _vb_e_step(x: Tensor, factors: VBFactors) -> Tensor:
    """Responsibilities from ``log rho_nk``, PRML eqs. 10.46 and 10.64-10.66."""
    alpha, beta, m, w, nu = factors
    d = x.shape[1]
    diff = x.unsqueeze(0) - m.unsqueeze(1)  # (K, N, D)
    quad = d / beta.unsqueeze(1) + nu.unsqueeze(1) * torch.einsum("kni,kij,knj->kn", diff, w, diff)
    log_rho = _log_pi_tilde(alpha) + 0.5 * _log_lambda_tilde(w, nu) - 0.5 * d * _LOG_2PI
    log_rho = log_rho.unsqueeze(1) - 0.5 * quad  # (K, N)
    return torch.softmax(log_rho, dim=0).T


def _log_pi_tilde(alpha: Tensor) -> Tensor:
    """``E[log pi_k] = psi(alpha_k) - psi(sum alpha)`` (PRML eq. 10.66)."""
    return torch.digamma(alpha) - torch.digamma(alpha.sum())


def _log_lambda_tilde(w: Tensor, nu: Tensor) -> Tensor:
    """``E[log |Lambda_k|]`` under ``Wishart(w_k, nu_k)`` (PRML eq. 10.65)."""
    d = w.shape[-1]
    i = torch.arange(1, d + 1, dtype=w.dtype)
    digammas = torch.digamma((nu.unsqueeze(-1) + 1 - i) / 2).sum(-1)
    return digammas + d * math.log(2) + torch.linalg.slogdet(w)[1]


def _log_wishart_norm(w: Tensor, nu: Tensor) -> Tensor:
    """``log B(W, nu)``, the Wishart normaliser of PRML eq. B.79."""
    d = w.shape[-1]
    log_gamma_d = torch.special.multigammaln(nu / 2, d)
    return -nu / 2 * torch.linalg.slogdet(w)[1] - nu * d / 2 * math.log(2) - log_gamma_d


def _trace(a: Tensor) -> Tensor:
    """Trace over the last two dimensions."""
    return a.diagonal(dim1=-2, dim2=-1).sum(-1)
