"""Maximum likelihood and MAP expectation-maximisation for the full-covariance Gaussian mixture.

Plain torch (no Pyro), float64; :func:`em` returns the history of its monotone objective so
that callers can check the ascent property. :func:`check_gmm_data` and the k-means++ seeding
are shared with :mod:`pyroext.models.gmm.vb`.
"""

__all__ = ["EMResult", "GMMPrior", "check_gmm_data", "em", "log_dirichlet_norm", "seed_means"]

import math
from typing import NamedTuple

import torch
from torch import Tensor

from pyroext.infer.compiled.capture import recording

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


class _Params(NamedTuple):
    weights: Tensor
    means: Tensor
    covariances: Tensor


def check_gmm_data(x: Tensor, k: int) -> None:
    """Validates mixture data and the number of components (any floating dtype, no copy).

    Arguments:
        x: Data, shape ``(N, D)``, finite.
        k: Number of components, an integer in ``[1, N]``.

    Raises:
        ValueError: If ``x`` is not a 2-D tensor with at least one row, holds NaN or inf, or
            ``k`` is not an integer in ``[1, N]``.
    """
    if not isinstance(x, Tensor) or x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        shape = tuple(getattr(x, "shape", ()))
        raise ValueError(f"x must be a 2-D tensor of shape (N, D), got shape {shape}")
    # a compiled program checked the values in its eager first call; recording reads no value
    if not recording() and not bool(torch.isfinite(x).all()):
        raise ValueError("x must contain only finite values (found NaN or inf)")
    n = x.shape[0]
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= n:
        raise ValueError(f"k={k} must be an integer in [1, N] = [1, {n}]")


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
    check_gmm_data(x, k)
    x = x.double()
    _check_em_settings(restarts, max_iter, tol, init, reg_covar, prior, x.shape[1])
    generator = torch.Generator().manual_seed(seed)
    best: EMResult | None = None
    for _ in range(restarts):
        centres = seed_means(x, k, generator, init)
        result = _run_em(x, centres, max_iter, tol, prior, reg_covar)
        if best is None or result.history[-1] > best.history[-1]:
            best = result
    assert best is not None
    return best


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


def seed_means(x: Tensor, k: int, generator: torch.Generator, init: str) -> Tensor:
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
    log_dir = log_dirichlet_norm(alpha) + ((alpha - 1) * params.weights.log()).sum()
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


def log_dirichlet_norm(alpha: Tensor) -> Tensor:
    """``log C(alpha) = log Gamma(sum alpha) - sum log Gamma(alpha_k)`` (PRML eq. B.23)."""
    return torch.lgamma(alpha.sum()) - torch.lgamma(alpha).sum()
