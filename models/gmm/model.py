"""Finite Gaussian mixture as a Pyro model, with its assignments marginalised by enumeration.

``weights ~ Dirichlet(concentration 1_K)``; per component (plate ``"component"``), a mean
``locs_k ~ N(0, prior_scale^2 I_D)`` and diagonal scales ``scales_k ~ LogNormal(0, 1)``, plus,
with ``covariance="full"``, a correlation Cholesky factor ``corr_chol_k ~ LKJCholesky(D, eta)``;
per observation (plate ``"obs"``), ``assignment_n ~ Categorical(weights)`` and
``x_n ~ N(locs_z, Sigma_z)``. Event dimensions are named (``weights``: ``component``; data,
means and scales: ``dim``) for the ArviZ export, whose plates give ``component`` and ``obs``.

The assignment site is marked for parallel enumeration, so ``TraceEnum_ELBO`` (with
``max_plate_nesting=1``) sums it out exactly and any guide over the global sites applies
(``AutoDelta`` for MAP, ``AutoNormal``, ...); hide ``"assignment"`` from autoguides with
``poutine.block(model, hide=["assignment"])``. The globals are indexed by the assignment, so
ELBO particles must not be vectorised over them. ``infer_discrete`` then recovers MAP or sampled
assignments, and :func:`responsibilities` the posterior assignment probabilities.

:func:`gmm_marginal_model` is the same mixture with the sum over assignments written out: it
has only continuous latents, so it also serves guides that evaluate the model themselves
(AutoDAIS, AutoMetFlow), the ArviZ export and prediction. The full mean-field family with an
explicit ``q(z_n)``, variational EM's, is :func:`mean_field_guide`.
"""

__all__ = [
    "COVARIANCES",
    "check_gmm_options",
    "component_distribution",
    "gmm_marginal_model",
    "gmm_model",
    "init_from_data",
    "mean_field_guide",
    "mixture_log_likelihood",
    "responsibilities",
]

import functools
import math
from collections.abc import Callable
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.infer.autoguide import AutoGuide, AutoGuideList, AutoNormal, init_to_value
from torch import Tensor

from pyroext.guides.categorical import AutoLocalCategorical
from pyroext.models.gmm.em import check_gmm_data
from pyroext.models.gmm.mixture import GaussianMixture, mixture_log_joint

COVARIANCES = ("diagonal", "full")


def check_gmm_options(x: Tensor, k: int, covariance: str, **positive: float) -> None:
    """Raises ValueError naming the first of data, ``k``, ``covariance`` or the positive
    hyperparameters (given by name) that is out of range."""
    check_gmm_data(x, k)
    if covariance not in COVARIANCES:
        raise ValueError(f"covariance={covariance!r} must be one of {', '.join(COVARIANCES)}")
    for name, value in positive.items():
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name}={value} must be a finite number > 0")


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
    return dist.MultivariateNormal(locs, scale_tril=_scale_tril(scales, corr_chol))


def _scale_tril(scales: Tensor, corr_chol: Tensor | None) -> Tensor:
    return torch.diag_embed(scales) if corr_chol is None else scales.unsqueeze(-1) * corr_chol


def gmm_model(
    x: Tensor,
    k: int,
    *,
    covariance: str = "diagonal",
    concentration: float = 1.0,
    prior_scale: float = 10.0,
    lkj_concentration: float = 1.0,
) -> None:
    """The Gaussian mixture with an explicit assignment site (see the module docstring).

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
    weights, locs, scales, corr_chol = _globals(
        x, k, covariance, concentration, prior_scale, lkj_concentration
    )
    with pyro.plate("obs", x.shape[0]):
        assignment = pyro.sample(
            "assignment", dist.Categorical(weights), infer={"enumerate": "parallel"}
        )
        chosen = component_distribution(
            locs[assignment],
            scales[assignment],
            None if corr_chol is None else corr_chol[assignment],
        )
        pyro.sample("x", chosen, obs=x, infer={"event_dims": ["dim"]})


def gmm_marginal_model(
    x: Tensor,
    k: int,
    *,
    covariance: str = "diagonal",
    concentration: float = 1.0,
    prior_scale: float = 10.0,
    lkj_concentration: float = 1.0,
) -> None:
    """The same mixture with the assignments summed out in closed form.

    ``x_n ~ sum_k w_k N(locs_k, Sigma_k)`` (a :class:`~pyroext.models.gmm.mixture.GaussianMixture`,
    scored at all draws, points and components in one matrix product), plus the deterministic
    site ``responsibilities`` ``p(z_n = k | x_n, theta)`` with dims ``obs, component``. It has
    the latent sites of :func:`gmm_model` without ``assignment``, and its log joint equals
    :func:`gmm_model`'s enumerated one, so guides built on it train with ``TraceEnum_ELBO`` on
    :func:`gmm_model`. Unlike :func:`gmm_model` it broadcasts over batched draws of the globals:
    the MCMC-in-guide guides' targets, the ArviZ export's replay and ``Predictive`` with
    ``parallel=True`` run it vectorised, and its pointwise log-likelihood is the marginal one
    that PSIS-LOO needs.

    Its arguments, and the errors they raise, are those of :func:`gmm_model`.
    """
    weights, locs, scales, corr_chol = _globals(
        x, k, covariance, concentration, prior_scale, lkj_concentration
    )
    # The components' batch shape must extend the weights' (extra leading draw dims included).
    batch = weights.shape[:-1]
    scale_tril = _scale_tril(
        scales.reshape(*batch, *scales.shape[-2:]),
        None if corr_chol is None else corr_chol.reshape(*batch, *corr_chol.shape[-3:]),
    )
    locs = locs.reshape(*batch, *locs.shape[-2:])
    mixture = GaussianMixture(weights, locs, scale_tril)
    with pyro.plate("obs", x.shape[0]):
        joint = mixture_log_joint(x, weights, locs, scale_tril)
        # pyro.deterministic takes no infer dict; this names its event axis for the export.
        with poutine.infer_config(config_fn=lambda _: {"event_dims": ["component"]}):
            pyro.deterministic("responsibilities", torch.softmax(joint, -1), event_dim=1)
        pyro.sample("x", mixture, obs=x, infer={"event_dims": ["dim"]})


def _globals(
    x: Tensor,
    k: int,
    covariance: str,
    concentration: float,
    prior_scale: float,
    lkj_concentration: float,
) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    check_gmm_options(
        x,
        k,
        covariance,
        concentration=concentration,
        prior_scale=prior_scale,
        lkj_concentration=lkj_concentration,
    )
    dim = x.shape[1]
    like = {"dtype": x.dtype, "device": x.device}
    weights = pyro.sample(
        "weights",
        dist.Dirichlet(torch.full((k,), concentration, **like)),
        infer={"event_dims": ["component"]},
    )
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
                "corr_chol",
                dist.LKJCholesky(dim, torch.tensor(lkj_concentration, **like)),
            )
    return weights, locs, scales, corr_chol


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
    check_gmm_options(x, k, "diagonal")
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


def mean_field_guide(
    x: Tensor,
    k: int,
    *,
    covariance: str = "diagonal",
    enumerate: bool = True,
    seed: int = 0,
    globals_guide: type[AutoGuide] = AutoNormal,
    **globals_options: Any,
) -> AutoGuideList:
    """The full mean-field guide ``q(theta) prod_n q(z_n)`` of :func:`gmm_model`.

    The globals get ``globals_guide`` (by default ``AutoNormal``, a mean-field Gaussian in the
    unconstrained space, started at :func:`init_from_data`), each observation a free categorical
    ``q(z_n)`` (:class:`~pyroext.guides.categorical.AutoLocalCategorical`). At a fixed
    ``q(theta)`` the best ``q(z_n)`` is ``∝ exp E_q[log w_k + log N(x_n | theta_k)]``, the E-step
    of variational EM; :func:`~pyroext.models.gmm.vb.vb_gmm` runs those coordinate updates in
    closed form for the conjugate priors.

    Arguments:
        x: The data the guide is trained on, ``(N, D)``.
        k: Number of components, in ``[1, N]``.
        covariance: The model's covariance option.
        enumerate: Enumerate ``q(z_n)`` (train with ``TraceEnum_ELBO(max_plate_nesting=1)``)
            or sample it (``Trace_ELBO``, score-function gradients for the logits).
        seed: Seed of the k-means++ choice of initial means.
        globals_guide: Autoguide class for the globals, accepting ``init_loc_fn``.
        globals_options: Further options of ``globals_guide``; ``AutoNormal`` gets
            ``init_scale=0.05`` unless given.

    Returns:
        An ``AutoGuideList`` of the globals' guide and the assignments' guide, for the model
        ``functools.partial(gmm_model, k=k, covariance=covariance)`` called as ``model(x)``.

    References:
        Bishop, C. M. (2006). Pattern Recognition and Machine Learning, §10.2. Springer.
        Hoffman, M. D., Blei, D. M., Wang, C. and Paisley, J. (2013). Stochastic variational
        inference. JMLR 14.
    """
    model = functools.partial(gmm_model, k=k, covariance=covariance)
    init = init_from_data(x, k, seed)  # validates x and k
    guide = AutoGuideList(model)
    hidden = poutine.block(model, hide=["assignment"])
    if globals_guide is AutoNormal:
        globals_options.setdefault("init_scale", 0.05)
    guide.append(globals_guide(hidden, init_loc_fn=init, **globals_options))
    guide.append(AutoLocalCategorical(model, site="assignment", enumerate=enumerate))
    return guide
