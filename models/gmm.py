"""Finite Gaussian mixture as a Pyro model, with its assignments marginalised by enumeration.

``weights ~ Dirichlet(concentration 1_K)``; per component (plate ``"component"``), a mean
``locs_k ~ N(0, prior_scale^2 I_D)`` and diagonal scales ``scales_k ~ LogNormal(0, 1)``, plus,
with ``covariance="full"``, a correlation Cholesky factor ``corr_chol_k ~ LKJCholesky(D, eta)``;
per observation (plate ``"obs"``), ``assignment_n ~ Categorical(weights)`` and
``x_n ~ N(locs_z, Sigma_z)``. Event dimensions are named ``dim`` for the ArviZ export.

The assignment site is marked for parallel enumeration, so ``TraceEnum_ELBO`` (with
``max_plate_nesting=1``) sums it out exactly and any guide over the global sites applies
(``AutoDelta`` for MAP, ``AutoNormal``, ...); hide ``"assignment"`` from autoguides with
``poutine.block(model, hide=["assignment"])``. The globals are indexed by the assignment, so
ELBO particles must not be vectorised over them. ``infer_discrete`` then recovers MAP or sampled
assignments, and :func:`responsibilities` the posterior assignment probabilities.
"""

__all__ = [
    "COVARIANCES",
    "component_distribution",
    "gmm_model",
    "init_from_data",
    "mixture_log_likelihood",
    "responsibilities",
]

from collections.abc import Callable

import pyro
import pyro.distributions as dist
import torch
from pyro.infer.autoguide import init_to_value
from torch import Tensor

from pyroext.models.gmm_em import check_gmm_data

COVARIANCES = ("diagonal", "full")


def _check(x: Tensor, k: int, covariance: str) -> None:
    check_gmm_data(x, k)
    if covariance not in COVARIANCES:
        raise ValueError(f"covariance={covariance!r} must be one of {', '.join(COVARIANCES)}")


def component_distribution(
    locs: Tensor, scales: Tensor, corr_chol: Tensor | None = None
) -> dist.MultivariateNormal:
    """The components ``N(locs_k, Sigma_k)``, batched over the leading dimensions.

    Arguments:
        locs: Means ``(..., K, D)``.
        scales: Standard deviations ``(..., K, D)``.
        corr_chol: Cholesky factors of the correlations ``(..., K, D, D)``, or None for
            diagonal covariances.

    Returns:
        A multivariate normal with batch shape ``(..., K)``.
    """
    if corr_chol is None:
        scale_tril = torch.diag_embed(scales)
    else:
        scale_tril = scales.unsqueeze(-1) * corr_chol
    return dist.MultivariateNormal(locs, scale_tril=scale_tril)


def gmm_model(
    x: Tensor,
    k: int,
    *,
    covariance: str = "diagonal",
    concentration: float = 1.0,
    prior_scale: float = 10.0,
    lkj_concentration: float = 1.0,
) -> None:
    """The Gaussian mixture model (see the module docstring).

    Arguments:
        x: Data ``(N, D)``, finite.
        k: Number of components, in ``[1, N]``.
        covariance: ``"diagonal"`` or ``"full"``.
        concentration: Dirichlet concentration of the weights, > 0.
        prior_scale: Prior standard deviation of the component means, > 0.
        lkj_concentration: LKJ concentration of the correlations (``"full"`` only), > 0.

    Raises:
        ValueError: For data or options out of range, before any sampling.
    """
    _check(x, k, covariance)
    num, dim = x.shape
    like = {"dtype": x.dtype, "device": x.device}
    weights = pyro.sample("weights", dist.Dirichlet(torch.full((k,), concentration, **like)))
    with pyro.plate("component", k):
        locs = pyro.sample(
            "locs",
            dist.Normal(torch.zeros(dim, **like), prior_scale).to_event(1),
            infer={"event_dims": ["dim"]},
        )
        scales = pyro.sample(
            "scales",
            dist.LogNormal(torch.zeros(dim, **like), 1.0).to_event(1),
            infer={"event_dims": ["dim"]},
        )
        corr_chol = None
        if covariance == "full":
            corr_chol = pyro.sample(
                "corr_chol", dist.LKJCholesky(dim, torch.tensor(lkj_concentration, **like))
            )
    with pyro.plate("obs", num):
        assignment = pyro.sample(
            "assignment", dist.Categorical(weights), infer={"enumerate": "parallel"}
        )
        chosen = component_distribution(
            locs[assignment],
            scales[assignment],
            None if corr_chol is None else corr_chol[assignment],
        )
        pyro.sample("x", chosen, obs=x, infer={"event_dims": ["dim"]})


def mixture_log_likelihood(
    x: Tensor, weights: Tensor, locs: Tensor, scales: Tensor, corr_chol: Tensor | None = None
) -> Tensor:
    """``sum_n log sum_k w_k N(x_n; locs_k, Sigma_k)``, the marginal log-likelihood."""
    components = component_distribution(locs, scales, corr_chol)
    joint = components.log_prob(x.unsqueeze(-2)) + weights.log()
    return torch.logsumexp(joint, -1).sum()


def responsibilities(
    x: Tensor, weights: Tensor, locs: Tensor, scales: Tensor, corr_chol: Tensor | None = None
) -> Tensor:
    """Posterior assignment probabilities ``p(z_n = k | x_n, theta)``, ``(N, K)``."""
    components = component_distribution(locs, scales, corr_chol)
    joint = components.log_prob(x.unsqueeze(-2)) + weights.log()
    return torch.softmax(joint, -1)


def init_from_data(x: Tensor, k: int, seed: int = 0) -> Callable[[dict], Tensor]:
    """An ``init_loc_fn`` for autoguides of :func:`gmm_model`: uniform weights, unit scales,
    identity correlations and means at ``k`` distinct data points drawn k-means++ style.

    Prior draws (Pyro's default) put the means ``prior_scale`` away from the data, where EM
    and SVI alike stall in poor local optima.

    Arguments:
        x: Data ``(N, D)``.
        k: Number of components, in ``[1, N]``.
        seed: Seed of the choice of points (independent of the global generator).

    Returns:
        The initialisation function, for ``AutoDelta(..., init_loc_fn=...)`` and the like.
    """
    _check(x, k, "diagonal")
    generator = torch.Generator().manual_seed(seed)
    chosen = [int(torch.randint(x.shape[0], (1,), generator=generator))]
    for _ in range(1, k):
        distance = torch.cdist(x, x[chosen]).min(-1).values ** 2
        chosen.append(int(torch.multinomial(distance.cpu(), 1, generator=generator)))
    dim = x.shape[1]
    values = {
        "weights": x.new_full((k,), 1.0 / k),
        "locs": x[chosen].clone(),
        "scales": x.new_ones(k, dim),
        "corr_chol": torch.eye(dim, dtype=x.dtype, device=x.device).expand(k, dim, dim),
    }
    return init_to_value(values=values)
