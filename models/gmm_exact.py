"""Exact reference algorithms for the full-covariance Gaussian mixture model.

Everything runs in plain torch (no Pyro) in float64 and returns float64 tensors or Python floats:
maximum likelihood and MAP expectation-maximisation (:func:`em`) and mean-field variational Bayes
for the conjugate Dirichlet / Normal-Wishart mixture (:func:`vb_gmm`), each with the history of
its monotone objective so that callers can check the ascent property.
"""

__all__ = [
    "EMResult",
    "GMMPrior",
    "VBResult",
    "check_gmm_data",
    "em",
    "vb_gmm",
    "vb_lower_bound",
]

import math
from typing import NamedTuple

import torch
from torch import Tensor

_LOG_2PI = math.log(2 * math.pi)


class GMMPrior(NamedTuple):
    """Prior for MAP-EM: ``pi ~ Dirichlet(alpha 1)`` and ``mu_k ~ N(mean_loc, mean_scale^2 I)``.

    The covariances get no prior (they stay maximum likelihood).

    Fields:
        dirichlet_concentration: Symmetric Dirichlet concentration ``alpha``, >= 1 so that the
            MAP weights ``(N_k + alpha - 1) / (N + K alpha - K)`` stay non-negative.
        mean_loc: Prior mean of every component mean, a float or a tensor of shape ``(D,)``.
        mean_scale: Prior standard deviation of every coordinate of every mean, > 0.
    """

    dirichlet_concentration: float
    mean_loc: float | Tensor
    mean_scale: float


class EMResult(NamedTuple):
    """Outcome of :func:`em`: the best restart's mixture and its objective history.

    Fields:
        weights: Mixing weights, shape ``(K,)``.
        means: Component means, shape ``(K, D)``.
        covariances: Full component covariances, shape ``(K, D, D)``.
        log_likelihood: ``sum_n log sum_k w_k N(x_n | mu_k, Sigma_k)`` at the returned parameters.
        history: Objective after initialisation and after each M-step, shape
            ``(iterations + 1,)``: the log-likelihood, or for MAP-EM the log posterior
            (log-likelihood plus log prior density). Its last entry belongs to the returned
            parameters.
        responsibilities: Posterior component probabilities under the returned parameters,
            shape ``(N, K)``.
        iterations: Number of EM iterations (M-steps) run by the best restart.
    """

    weights: Tensor
    means: Tensor
    covariances: Tensor
    log_likelihood: float
    history: Tensor
    responsibilities: Tensor
    iterations: int


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


class _Params(NamedTuple):
    weights: Tensor
    means: Tensor
    covariances: Tensor


def check_gmm_data(x: Tensor, k: int) -> Tensor:
    """Validates mixture data and the number of components.

    Arguments:
        x: Data, shape ``(N, D)``, finite.
        k: Number of components, an integer in ``[1, N]``.

    Returns:
        ``x`` as float64.

    Raises:
        ValueError: If ``x`` is not a 2-D tensor with at least one row, holds NaN or inf, or
            ``k`` is not an integer in ``[1, N]``.
    """
    if not isinstance(x, Tensor) or x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        shape = tuple(getattr(x, "shape", ()))
        raise ValueError(f"x must be a 2-D tensor of shape (N, D), got shape {shape}")
    x = x.double()
    if not bool(torch.isfinite(x).all()):
        raise ValueError("x must contain only finite values (found NaN or inf)")
    n = x.shape[0]
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= n:
        raise ValueError(f"k={k} must be an integer in [1, N] = [1, {n}]")
    return x


def em(
    x: Tensor,
    k: int,
    *,
    restarts: int = 5,
    max_iter: int = 500,
    tol: float = 1e-10,
    seed: int = 0,
    prior: GMMPrior | None = None,
    init: str = "kmeans++",
    reg_covar: float = 1e-6,
) -> EMResult:
    """Maximum likelihood (or MAP) EM for a full-covariance Gaussian mixture.

    Each restart draws ``k`` distinct data points as initial means, by k-means++ seeding
    (``init="kmeans++"``) or uniformly (``init="random"``) from a ``torch.Generator`` seeded
    with ``seed``; initial covariances are the data covariance and the weights uniform. The
    restart with the highest final objective is returned. Iteration stops once the objective
    changes by less than ``tol`` per data point, as scikit-learn does.

    M-step (PRML eqs. 9.24-9.26): ``w_k = N_k / N``, ``mu_k = sum_n r_nk x_n / N_k`` and
    ``Sigma_k = sum_n r_nk (x_n - mu_k)(x_n - mu_k)^T / N_k + reg_covar I``. The ridge
    ``reg_covar`` (scikit-learn's default ``1e-6``) keeps covariances positive definite when a
    component collapses; it perturbs the fixed point by ``O(reg_covar)`` and the log-likelihood
    by ``O(reg_covar^2)``; pass ``0.0`` for textbook EM.

    With ``prior`` the objective is the log posterior and the M-step becomes an ECM step
    (Meng & Rubin, 1993): ``w_k = (N_k + alpha - 1) / (N + K alpha - K)``, then each mean is
    the precision-weighted combination ``(N_k Sigma_k^-1 + s^-2 I)^-1 (Sigma_k^-1 sum_n r_nk x_n
    + s^-2 mean_loc)`` under the current ``Sigma_k``, then ``Sigma_k`` as above about the new
    mean. Each conditional maximisation raises the expected complete-data log posterior, so the
    objective is still non-decreasing.

    Arguments:
        x: Data, shape ``(N, D)``.
        k: Number of components, in ``[1, N]``.
        restarts: Number of initialisations, >= 1.
        max_iter: Maximum EM iterations per restart, >= 1.
        tol: Convergence threshold on the objective change per data point, >= 0.
        seed: Seed of the initialisation generator.
        prior: Optional :class:`GMMPrior` for MAP-EM.
        init: ``"kmeans++"`` or ``"random"``.
        reg_covar: Non-negative ridge added to every covariance diagonal in the M-step.

    Returns:
        The best restart's :class:`EMResult`.

    Raises:
        ValueError: On invalid data, ``k`` or settings (see :func:`check_gmm_data`).

    References:
        Dempster, A. P., Laird, N. M. & Rubin, D. B. (1977). Maximum likelihood from incomplete
        data via the EM algorithm. JRSS B 39(1), 1-38.
        Bishop, C. M. (2006). Pattern Recognition and Machine Learning, §9.2.2, eqs. 9.23-9.28.
        Meng, X.-L. & Rubin, D. B. (1993). Maximum likelihood estimation via the ECM
        algorithm: a general framework. Biometrika 80(2), 267-278.
        Arthur, D. & Vassilvitskii, S. (2007). k-means++: the advantages of careful seeding.
        SODA 2007, 1027-1035.
    """
    x = check_gmm_data(x, k)
    _check_em_settings(restarts, max_iter, tol, init, reg_covar, prior, x.shape[1])
    generator = torch.Generator().manual_seed(seed)
    best: EMResult | None = None
    for _ in range(restarts):
        centres = _seed_means(x, k, generator, init)
        result = _run_em(x, centres, max_iter, tol, prior, reg_covar)
        if best is None or result.history[-1] > best.history[-1]:
            best = result
    assert best is not None
    return best


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
    x = check_gmm_data(x, k)
    hyper = _vb_hyper(x, alpha0, beta0, m0, w0, nu0)
    if max_iter < 1 or tol < 0:
        raise ValueError(f"max_iter={max_iter} must be >= 1 and tol={tol} must be >= 0")
    centres = _seed_means(x, k, torch.Generator().manual_seed(seed), "kmeans++")
    resp = torch.nn.functional.one_hot(torch.cdist(x, centres).argmin(1), k).double()
    q = _vb_m_step(x, resp, hyper)
    history = [vb_lower_bound(x, resp, *q, *hyper)]
    for _ in range(max_iter - 1):
        resp = _vb_e_step(x, *q)
        q = _vb_m_step(x, resp, hyper)
        history.append(vb_lower_bound(x, resp, *q, *hyper))
        if abs(history[-1] - history[-2]) < tol * x.shape[0]:
            break
    return VBResult(*q, resp, history[-1], torch.tensor(history, dtype=x.dtype), len(history))


def vb_lower_bound(
    x: Tensor,
    resp: Tensor,
    alpha: Tensor,
    beta: Tensor,
    m: Tensor,
    w: Tensor,
    nu: Tensor,
    alpha0: float,
    beta0: float,
    m0: Tensor,
    w0: Tensor,
    nu0: float,
) -> float:
    """Closed-form evidence lower bound of the variational mixture (PRML eqs. 10.70-10.77).

    Valid for any responsibilities and any factor parameters, not only CAVI fixed points.

    Arguments:
        x: Data, shape ``(N, D)``, float64.
        resp: Responsibilities ``q(Z)``, shape ``(N, K)``.
        alpha: ``q(pi)`` concentrations, shape ``(K,)``.
        beta: ``q(mu | Lambda)`` precision scalings, shape ``(K,)``.
        m: ``q(mu | Lambda)`` locations, shape ``(K, D)``.
        w: ``q(Lambda)`` Wishart scales, shape ``(K, D, D)``.
        nu: ``q(Lambda)`` degrees of freedom, shape ``(K,)``.
        alpha0: Prior Dirichlet concentration.
        beta0: Prior precision scaling of the means.
        m0: Prior mean location, shape ``(D,)``.
        w0: Prior Wishart scale, shape ``(D, D)``.
        nu0: Prior Wishart degrees of freedom.

    Returns:
        ``E_q[log p(X, Z, pi, mu, Lambda)] - E_q[log q(Z, pi, mu, Lambda)]`` in nats.

    References:
        Bishop, C. M. (2006). Pattern Recognition and Machine Learning, eqs. 10.70-10.77.
    """
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
    e_pi = _log_dirichlet_norm(torch.full_like(alpha, alpha0)) + (alpha0 - 1) * log_pi.sum()
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
    e_qpi = ((alpha - 1) * log_pi).sum() + _log_dirichlet_norm(alpha)
    entropy_lam = -_log_wishart_norm(w, nu) - (nu - d - 1) / 2 * log_lam + nu * d / 2
    e_qmu_lam = 0.5 * log_lam + d / 2 * torch.log(beta / (2 * math.pi)) - d / 2 - entropy_lam
    total = e_lik + e_z + e_pi + e_mu_lam - e_qz - e_qpi - e_qmu_lam.sum()
    return float(total)


# ---------------------------------------------------------------------------------------------
# EM internals


def _check_em_settings(
    restarts: int,
    max_iter: int,
    tol: float,
    init: str,
    reg_covar: float,
    prior: GMMPrior | None,
    d: int,
) -> None:
    """Raises ValueError naming the first invalid EM setting."""
    if restarts < 1:
        raise ValueError(f"restarts={restarts} must be an integer >= 1")
    if max_iter < 1:
        raise ValueError(f"max_iter={max_iter} must be an integer >= 1")
    if not tol >= 0:
        raise ValueError(f"tol={tol} must be >= 0")
    if init not in ("kmeans++", "random"):
        raise ValueError(f"init={init!r} must be 'kmeans++' or 'random'")
    if not (math.isfinite(reg_covar) and reg_covar >= 0):
        raise ValueError(f"reg_covar={reg_covar} must be a finite number >= 0")
    if prior is None:
        return
    if not prior.dirichlet_concentration >= 1:
        alpha = prior.dirichlet_concentration
        raise ValueError(f"prior.dirichlet_concentration={alpha} must be >= 1")
    if not (math.isfinite(prior.mean_scale) and prior.mean_scale > 0):
        raise ValueError(f"prior.mean_scale={prior.mean_scale} must be a finite number > 0")
    loc = torch.as_tensor(prior.mean_loc, dtype=torch.float64)
    if loc.ndim > 1 or (loc.ndim == 1 and loc.shape[0] != d):
        raise ValueError(f"prior.mean_loc must be a float or of shape (D,) = ({d},)")


def _seed_means(x: Tensor, k: int, generator: torch.Generator, init: str) -> Tensor:
    """``k`` distinct data points: k-means++ seeding or a uniform draw without replacement."""
    n = x.shape[0]
    if init == "random":
        return x[torch.randperm(n, generator=generator)[:k]].clone()
    index = [int(torch.randint(n, (1,), generator=generator))]
    sq_dist = (x - x[index[0]]).square().sum(1)
    for _ in range(1, k):
        probs = sq_dist.clone()
        probs[index] = 0.0
        if probs.sum() <= 0:  # all remaining points coincide with a centre
            probs = torch.ones(n, dtype=x.dtype)
            probs[index] = 0.0
        index.append(int(torch.multinomial(probs, 1, generator=generator)))
        sq_dist = torch.minimum(sq_dist, (x - x[index[-1]]).square().sum(1))
    return x[index].clone()


def _run_em(
    x: Tensor,
    centres: Tensor,
    max_iter: int,
    tol: float,
    prior: GMMPrior | None,
    reg_covar: float,
) -> EMResult:
    """One EM run from the given initial means."""
    n, d = x.shape
    k = centres.shape[0]
    cov = torch.cov(x.T, correction=0).reshape(d, d) + reg_covar * torch.eye(d, dtype=x.dtype)
    params = _Params(torch.full((k,), 1.0 / k, dtype=x.dtype), centres, cov.expand(k, d, d))
    log_resp, loglik = _e_step(x, params)
    history = [loglik + _log_prior(params, prior)]
    for _ in range(max_iter):
        params = _m_step(x, log_resp.exp(), params, prior, reg_covar)
        log_resp, loglik = _e_step(x, params)
        history.append(loglik + _log_prior(params, prior))
        if abs(history[-1] - history[-2]) < tol * n:
            break
    trace = torch.tensor(history, dtype=x.dtype)
    return EMResult(*params, loglik, trace, log_resp.exp(), len(history) - 1)


def _log_gaussians(x: Tensor, means: Tensor, covariances: Tensor) -> Tensor:
    """``log N(x_n | mu_k, Sigma_k)``, shape ``(N, K)``, via Cholesky factors."""
    chol = torch.linalg.cholesky(covariances)
    diff = (x.unsqueeze(0) - means.unsqueeze(1)).transpose(1, 2)  # (K, D, N)
    z = torch.linalg.solve_triangular(chol, diff, upper=False)
    half_logdet = chol.diagonal(dim1=-2, dim2=-1).log().sum(-1)
    d = x.shape[1]
    return (-0.5 * z.square().sum(1) - half_logdet.unsqueeze(1) - 0.5 * d * _LOG_2PI).T


def _e_step(x: Tensor, params: _Params) -> tuple[Tensor, float]:
    """Log responsibilities ``(N, K)`` and the log-likelihood under ``params``."""
    joint = _log_gaussians(x, params.means, params.covariances) + params.weights.log()
    norm = torch.logsumexp(joint, dim=1, keepdim=True)
    return joint - norm, float(norm.sum())


def _log_prior(params: _Params, prior: GMMPrior | None) -> float:
    """Log density of the MAP prior at ``params`` (0 for maximum likelihood)."""
    if prior is None:
        return 0.0
    k = params.weights.shape[0]
    alpha = torch.full((k,), float(prior.dirichlet_concentration), dtype=params.weights.dtype)
    log_dir = _log_dirichlet_norm(alpha) + ((alpha - 1) * params.weights.log()).sum()
    loc = torch.as_tensor(prior.mean_loc, dtype=params.means.dtype)
    scale = prior.mean_scale
    log_norm = -0.5 * ((params.means - loc) / scale).square() - math.log(scale) - 0.5 * _LOG_2PI
    return float(log_dir + log_norm.sum())


def _m_step(
    x: Tensor, resp: Tensor, old: _Params, prior: GMMPrior | None, reg_covar: float
) -> _Params:
    """ML M-step, or the MAP ECM step when ``prior`` is given (see :func:`em`)."""
    n, d = x.shape
    k = resp.shape[1]
    nk = resp.sum(0)
    sum_x = resp.T @ x  # (K, D)
    if prior is None:
        weights = nk / n
        means = sum_x / nk.unsqueeze(1)
    else:
        alpha = float(prior.dirichlet_concentration)
        weights = (nk + alpha - 1) / (n + k * alpha - k)
        prec = torch.linalg.inv(old.covariances)  # (K, D, D)
        inv_var = prior.mean_scale**-2
        loc = torch.as_tensor(prior.mean_loc, dtype=x.dtype).expand(d)
        post_prec = nk[:, None, None] * prec + inv_var * torch.eye(d, dtype=x.dtype)
        rhs = (prec @ sum_x.unsqueeze(2)).squeeze(2) + inv_var * loc
        means = torch.linalg.solve(post_prec, rhs)
    diff = x.unsqueeze(0) - means.unsqueeze(1)  # (K, N, D)
    cov = torch.einsum("nk,kni,knj->kij", resp, diff, diff) / nk[:, None, None]
    cov = 0.5 * (cov + cov.transpose(1, 2)) + reg_covar * torch.eye(d, dtype=x.dtype)
    return _Params(weights, means, cov)


# ---------------------------------------------------------------------------------------------
# Variational Bayes internals


def _vb_hyper(
    x: Tensor,
    alpha0: float,
    beta0: float,
    m0: Tensor | None,
    w0: Tensor | None,
    nu0: float | None,
) -> tuple[float, float, Tensor, Tensor, float]:
    """Validated hyperparameters ``(alpha0, beta0, m0, w0, nu0)`` with defaults filled in."""
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
    return float(alpha0), float(beta0), m0, w0, nu0


def _vb_stats(x: Tensor, resp: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``N_k``, ``xbar_k`` and ``S_k`` of PRML eqs. 10.51-10.53 (empty components give 0)."""
    nk = resp.sum(0)
    safe = nk.clamp_min(torch.finfo(x.dtype).tiny)
    xbar = (resp.T @ x) / safe.unsqueeze(1)
    diff = x.unsqueeze(0) - xbar.unsqueeze(1)
    s = torch.einsum("nk,kni,knj->kij", resp, diff, diff) / safe[:, None, None]
    return nk, xbar, s


def _vb_m_step(
    x: Tensor, resp: Tensor, hyper: tuple[float, float, Tensor, Tensor, float]
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """``q(pi) q(mu, Lambda)`` parameters ``(alpha, beta, m, w, nu)``, PRML eqs. 10.58-10.63."""
    alpha0, beta0, m0, w0, nu0 = hyper
    nk, xbar, s = _vb_stats(x, resp)
    alpha, beta, nu = alpha0 + nk, beta0 + nk, nu0 + nk
    m = (beta0 * m0 + nk.unsqueeze(1) * xbar) / beta.unsqueeze(1)
    dx = xbar - m0
    outer = dx.unsqueeze(2) * dx.unsqueeze(1)
    coef = (beta0 * nk / (beta0 + nk))[:, None, None]
    w_inv = torch.linalg.inv(w0) + nk[:, None, None] * s + coef * outer
    w = torch.linalg.inv(0.5 * (w_inv + w_inv.transpose(1, 2)))
    return alpha, beta, m, 0.5 * (w + w.transpose(1, 2)), nu


def _vb_e_step(x: Tensor, alpha: Tensor, beta: Tensor, m: Tensor, w: Tensor, nu: Tensor) -> Tensor:
    """Responsibilities from ``log rho_nk``, PRML eqs. 10.46 and 10.64-10.66."""
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


def _log_dirichlet_norm(alpha: Tensor) -> Tensor:
    """``log C(alpha) = log Gamma(sum alpha) - sum log Gamma(alpha_k)`` (PRML eq. B.23)."""
    return torch.lgamma(alpha.sum()) - torch.lgamma(alpha).sum()


def _trace(a: Tensor) -> Tensor:
    """Trace over the last two dimensions."""
    return a.diagonal(dim1=-2, dim2=-1).sum(-1)
