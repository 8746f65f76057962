"""Gaussian mixture by SVI with enumerated assignments, checked against EM on the same data."""

__all__ = [
    "GMM_DATASETS",
    "GMM_GUIDES",
    "JOB",
    "GMMConfig",
    "GMMFit",
    "fit_gmm",
]

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import pandas as pd
import pyro
import torch
import xarray as xr
from pyro.infer import Trace_ELBO, TraceEnum_ELBO
from pyro.infer.autoguide import AutoGuide

from pyroext.arviz import from_pyro_svi
from pyroext.checks import check_counts, check_learning_rate
from pyroext.data import TabularData, load_faithful, synthetic_mixture
from pyroext.guides import GUIDES, make_guide
from pyroext.infer import SVIResult, run_svi
from pyroext.infer.device import resolve_device
from pyroext.jobs import Job, RunConfig, configure, option
from pyroext.models import gmm
from pyroext.models.gmm.em import EMResult, em
from pyroext.models.gmm.figure import plot_mixture
from pyroext.models.gmm.labels import canonical_order
from pyroext.report import posterior_summary
from pyroext.runs import RunDir

GMM_DATASETS: dict[str, Callable[..., TabularData]] = {
    "faithful": functools.partial(load_faithful, standardize=True),
    "synthetic": synthetic_mixture,
}
GMM_GUIDES = (*GUIDES, "mean-field")
FINAL_LR_FRACTION = 0.02
ELBO_PARTICLES = 200
VECTORISED_ELBO_GUIDES = ("normal", "diagonal", "mvn", "lowrank", "delta")
"""Pyro's autoguides, whose ELBO particles run in one batch through the marginal model."""


class GMMFit(NamedTuple):
    """Outcome of :func:`fit_gmm`.

    Fields:
        guide_name: ``"mean-field"`` or a name from :data:`pyroext.guides.GUIDES`.
        guide: The trained guide.
        result: The runner's result.
        summary: Posterior table of weights, means and scales (components in canonical order),
            beside the EM estimates in the same order.
        tree: The ArviZ DataTree of 1000 guide draws, components in canonical order.
        em: The EM maximum-likelihood reference.
        lppd: Log pointwise predictive density ``sum_n log E_q[p(x_n | theta)]`` of the data;
            for the MAP guide (``delta``), the log-likelihood at the MAP point.
        elbo: ELBO estimate of the trained guide (200 particles): ``Trace_ELBO`` on the
            marginal model with the particles batched for Pyro's autoguides, else
            ``TraceEnum_ELBO`` on :func:`~pyroext.models.gmm.gmm_model` (the same expectation:
            the marginal model's log joint is the enumerated one).
    """

    guide_name: str
    guide: AutoGuide
    result: SVIResult
    summary: pd.DataFrame
    tree: xr.DataTree
    em: EMResult
    lppd: float
    elbo: float

    def describe(self) -> str:
        """One line comparing the fit with the EM optimum."""
        return (
            f"log-likelihood (lppd) {self.lppd:.3f} vs EM optimum {self.em.log_likelihood:.3f}; "
            f"ELBO {self.elbo:.3f}"
        )


@dataclasses.dataclass(frozen=True, kw_only=True)
class GMMConfig(RunConfig):
    """Options of :func:`fit_gmm`, beside the run options of :class:`~pyroext.jobs.RunConfig`.

    Fields:
        guide: A name from :data:`GMM_GUIDES` (``delta`` gives MAP estimates).
        data: A name from :data:`GMM_DATASETS` (Old Faithful is standardised).
        k: Number of components, in ``[1, N]``.
        covariance: ``"full"`` or ``"diagonal"``.
        steps: Optimiser steps (ClippedAdam, rate decayed to ``FINAL_LR_FRACTION``).
        lr_init: Initial learning rate.
    """

    guide: str = option("mvn", "variational guide of the globals", choices=GMM_GUIDES)
    data: str = option("faithful", "dataset", choices=tuple(GMM_DATASETS))
    k: int = option(2, "mixture components, in [1, N]")
    covariance: str = option("full", "component covariances", choices=gmm.COVARIANCES)
    steps: int = option(3000, "SVI steps")
    lr_init: float = option(0.05, "initial learning rate (decayed to 2% of it)")

    def __post_init__(self) -> None:
        if self.guide not in GMM_GUIDES:
            valid = ", ".join(GMM_GUIDES)
            raise ValueError(f"guide={self.guide!r} is unknown; valid guides: {valid}")
        if self.data not in GMM_DATASETS:
            valid = ", ".join(GMM_DATASETS)
            raise ValueError(f"data={self.data!r} is unknown; valid datasets: {valid}")
        check_counts(steps=self.steps)
        check_learning_rate(self.lr_init)


def fit_gmm(config: GMMConfig | None = None, /, **options: Any) -> GMMFit:
    """Fits the Gaussian mixture by SVI, its assignments summed out by ``TraceEnum_ELBO``.

    The guides of :data:`pyroext.guides.GUIDES` cover the globals (built on
    :func:`~pyroext.models.gmm.gmm_marginal_model`, which the MCMC-in-guide guides target);
    ``"mean-field"`` is :func:`~pyroext.models.gmm.mean_field_guide`, with an enumerated
    ``q(z_n)`` per point. Means start at k-means++ data points.

    Arguments:
        config: The options (default :class:`GMMConfig`'s).
        options: Fields of :class:`GMMConfig` to replace, e.g. ``k=3``.

    Returns:
        A :class:`GMMFit`. With ``out``, its folder holds ``losses.csv``, ``summary.csv``,
        ``loss.png``, ``clusters.png`` (data coloured by responsibility, component ellipses)
        and ``posterior.nc``.

    Raises:
        ValueError: For an unknown guide or dataset, or data and ``k`` out of range, before
            training.
    """
    config = configure(config, GMMConfig, options)
    dataset = GMM_DATASETS[config.data](dtype=torch.float64)
    gmm.check_gmm_options(dataset.x, config.k, config.covariance)
    x = dataset.x.to(resolve_device(config.device))
    run = config.run_dir()
    mixture = {"k": config.k, "covariance": config.covariance}
    model = functools.partial(gmm.gmm_model, **mixture)
    marginal = functools.partial(gmm.gmm_marginal_model, **mixture)
    pyro.clear_param_store()
    approx = _guide(config, marginal, x)
    result = run_svi(
        model,
        approx,
        x,
        num_steps=config.steps,
        optim=pyro.optim.ClippedAdam(
            {"lr": config.lr_init, "lrd": FINAL_LR_FRACTION ** (1 / config.steps)}
        ),
        loss=TraceEnum_ELBO(max_plate_nesting=1),
        seed=config.seed,
        progress=config.progress,
        compile=config.compile,
    )
    fit = _evaluate(config, model, marginal, approx, result, dataset._replace(x=x))
    if run is not None:
        _write(fit, x, config, run)
    return fit


def _evaluate(
    config: GMMConfig,
    model: Callable[..., None],
    marginal: Callable[..., None],
    guide: AutoGuide,
    result: SVIResult,
    data: TabularData,
) -> GMMFit:
    tree = _export(marginal, guide, data.x, data.feature_names)
    reference = em(data.x.cpu(), config.k, seed=config.seed)
    return GMMFit(
        config.guide,
        guide,
        result,
        _summary(tree, reference),
        tree,
        reference,
        _lppd(tree),
        _elbo(model, marginal, guide, data.x, batched=config.guide in VECTORISED_ELBO_GUIDES),
    )


def _guide(config: GMMConfig, marginal: Callable[..., None], x: torch.Tensor) -> AutoGuide:
    if config.guide == "mean-field":
        return gmm.mean_field_guide(x, config.k, covariance=config.covariance, seed=config.seed)
    init = gmm.init_from_data(x, config.k, config.seed)
    return make_guide(config.guide, marginal, init_loc_fn=init)


def _export(
    marginal: Callable[..., None],
    guide: AutoGuide,
    x: torch.Tensor,
    feature_names: tuple[str, ...],
) -> xr.DataTree:
    tree = from_pyro_svi(
        marginal, guide, x, num_samples=1000, coords={"dim": list(feature_names)}, seed=0
    )
    return canonical_order(tree)


def _lppd(tree: xr.DataTree) -> float:
    pointwise = torch.as_tensor(tree["log_likelihood"]["x"].values).flatten(0, 1)
    draws = pointwise.shape[0]
    return float((torch.logsumexp(pointwise, 0) - torch.log(torch.tensor(draws))).sum())


def _elbo(
    model: Callable[..., None],
    marginal: Callable[..., None],
    guide: AutoGuide,
    x: torch.Tensor,
    *,
    batched: bool,
) -> float:
    """The ELBO of ``guide``, ``batched``: on the marginal model (whose log joint sums the
    assignments out) with all particles at once, since one at a time each costs a guide call
    (seconds in all for a full-rank guide of hundreds of components); else enumerated."""
    with torch.no_grad():
        if batched:
            elbo = Trace_ELBO(
                max_plate_nesting=1, num_particles=ELBO_PARTICLES, vectorize_particles=True
            )
            return -elbo.loss(marginal, guide, x)
        elbo = TraceEnum_ELBO(max_plate_nesting=1, num_particles=ELBO_PARTICLES)
        return -elbo.loss(model, guide, x)


def _summary(tree: xr.DataTree, reference: EMResult) -> pd.DataFrame:
    posterior = tree["posterior"]
    draws = posterior.sizes["chain"] * posterior.sizes["draw"]
    order = reference.means[:, 0].argsort()
    em_values = {
        "weights": reference.weights[order],
        "locs": reference.means[order],
        "scales": reference.covariances[order].diagonal(dim1=-2, dim2=-1).sqrt(),
    }
    columns, names, em_column = [], [], []
    for site, em_value in em_values.items():
        values = torch.as_tensor(posterior[site].values).reshape(draws, -1)
        columns.append(values)
        names += _labels(site, posterior[site])
        em_column.append(em_value.reshape(-1))
    table = posterior_summary(torch.cat(columns, 1), names)
    table["em"] = torch.cat(em_column).numpy()
    return table


def _labels(site: str, variable: xr.DataArray) -> list[str]:
    if variable.ndim == 3:
        return [f"{site}[{k}]" for k in range(variable.shape[2])]
    dims = variable.coords[variable.dims[3]].values
    return [f"{site}[{k},{d}]" for k in range(variable.shape[2]) for d in dims]


def _write(fit: GMMFit, x: torch.Tensor, config: GMMConfig, run: RunDir) -> None:
    title = f"Gaussian mixture ({config.data}, K={config.k}), guide {config.guide}"
    run.write_training(fit.result, fit.summary, title)
    run.write_posterior(fit.tree)
    posterior = fit.tree["posterior"]
    figure = plot_mixture(
        x.cpu(),
        responsibilities=_draw_mean(posterior["responsibilities"]),
        weights=_draw_mean(posterior["weights"]),
        locs=_draw_mean(posterior["locs"]),
        covariances=_draw_mean(_covariances(posterior)),
        feature_names=tuple(str(d) for d in posterior["locs"].coords["dim"].values),
        title=title,
    )
    run.write_figure(figure, "clusters.png")
    run.write_manifest(JOB.name, config)


def _draw_mean(variable: xr.DataArray) -> torch.Tensor:
    return torch.as_tensor(variable.mean(("chain", "draw")).values)


def _covariances(posterior: xr.DataTree) -> xr.DataArray:
    scales = torch.as_tensor(posterior["scales"].values)
    if "corr_chol" in posterior:
        tril = scales.unsqueeze(-1) * torch.as_tensor(posterior["corr_chol"].values)
    else:
        tril = torch.diag_embed(scales)
    return xr.DataArray((tril @ tril.mT).numpy(), dims=("chain", "draw", "component", "r", "c"))


JOB = Job(
    "gmm",
    "Gaussian mixture with enumerated assignments, against EM",
    GMMConfig,
    fit_gmm,
    quick=("--steps", "20"),
)
