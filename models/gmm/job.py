"""Gaussian mixture by SVI with enumerated assignments, checked against EM on the same data."""

__all__ = [
    "GMM_DATASETS",
    "GMM_GUIDES",
    "GMMFit",
    "fit_gmm",
]

import functools
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import pandas as pd
import pyro
import torch
import xarray as xr
from pyro.infer import TraceEnum_ELBO
from pyro.infer.autoguide import AutoGuide

from pyroext.arviz import from_pyro_svi
from pyroext.data import TabularData, load_faithful, synthetic_mixture
from pyroext.diagnose import POSTERIOR_FILE, save_datatree
from pyroext.guides import GUIDES, make_guide
from pyroext.infer import SVIResult, run_svi
from pyroext.infer.device import resolve_device
from pyroext.models import gmm
from pyroext.models.gmm.em import EMResult, em
from pyroext.models.gmm.figure import plot_mixture
from pyroext.models.gmm.labels import canonical_order
from pyroext.report import posterior_summary, write_fit_outputs

GMM_DATASETS: dict[str, Callable[..., TabularData]] = {
    "faithful": functools.partial(load_faithful, standardize=True),
    "synthetic": synthetic_mixture,
}
GMM_GUIDES = (*GUIDES, "mean-field")
FINAL_LR_FRACTION = 0.02
ELBO_PARTICLES = 200


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
        elbo: ``TraceEnum_ELBO`` estimate of the trained guide (200 particles).
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


def fit_gmm(
    guide: str = "mvn",
    *,
    data: str = "faithful",
    k: int = 2,
    covariance: str = "full",
    steps: int = 3000,
    lr_init: float = 0.05,
    device: str = "cpu",
    seed: int = 0,
    out: str | Path | None = None,
    progress: bool = True,
    compile: bool | str = "auto",
) -> GMMFit:
    """Fits the Gaussian mixture by SVI, its assignments summed out by ``TraceEnum_ELBO``.

    The guides of :data:`pyroext.guides.GUIDES` cover the globals (built on
    :func:`~pyroext.models.gmm.gmm_marginal_model`, which the MCMC-in-guide guides target);
    ``"mean-field"`` is :func:`~pyroext.models.gmm.mean_field_guide`, with an enumerated
    ``q(z_n)`` per point. Means start at k-means++ data points.

    Arguments:
        guide: A name from :data:`GMM_GUIDES` (``delta`` gives MAP estimates).
        data: A name from :data:`GMM_DATASETS` (Old Faithful is standardised).
        k: Number of components, in ``[1, N]``.
        covariance: ``"full"`` or ``"diagonal"``.
        steps: Optimiser steps (ClippedAdam, rate decayed to ``FINAL_LR_FRACTION``).
        lr_init: Initial learning rate.
        device: Torch device.
        seed: Seed of the run and of the initial means.
        out: If given, folder for ``losses.csv``, ``summary.csv``, ``loss.png``,
            ``clusters.png`` (data coloured by responsibility, component ellipses) and
            ``posterior.nc``.
        progress: Show a progress bar.
        compile: Run each SVI step as one compiled graph: ``True``, ``False`` or ``"auto"``
            (long enough runs; see :func:`~pyroext.infer.run_svi`).

    Returns:
        A :class:`GMMFit`.

    Raises:
        ValueError: For an unknown guide or dataset, or data and ``k`` out of range, before
            training.
    """
    if guide not in GMM_GUIDES:
        raise ValueError(f"guide={guide!r} is unknown; valid guides: {', '.join(GMM_GUIDES)}")
    if data not in GMM_DATASETS:
        raise ValueError(f"data={data!r} is unknown; valid datasets: {', '.join(GMM_DATASETS)}")
    dataset = GMM_DATASETS[data](dtype=torch.float64)
    gmm.check_gmm_options(dataset.x, k, covariance)
    x = dataset.x.to(resolve_device(device))
    options = {"k": k, "covariance": covariance}
    model = functools.partial(gmm.gmm_model, **options)
    marginal = functools.partial(gmm.gmm_marginal_model, **options)
    pyro.clear_param_store()
    approx = _guide(guide, marginal, x, k, covariance, seed)
    result = run_svi(
        model,
        approx,
        x,
        num_steps=steps,
        optim=pyro.optim.ClippedAdam({"lr": lr_init, "lrd": FINAL_LR_FRACTION ** (1 / steps)}),
        loss=TraceEnum_ELBO(max_plate_nesting=1),
        seed=seed,
        progress=progress,
        compile=compile,
    )
    tree = _export(marginal, approx, x, dataset.feature_names)
    reference = em(x.cpu(), k, seed=seed)
    fit = GMMFit(
        guide,
        approx,
        result,
        _summary(tree, reference),
        tree,
        reference,
        _lppd(tree),
        _elbo(model, approx, x),
    )
    if out is not None:
        _write(fit, x, f"Gaussian mixture ({data}, K={k}), guide {guide}", Path(out))
    return fit


def _guide(
    name: str,
    marginal: Callable[..., None],
    x: torch.Tensor,
    k: int,
    covariance: str,
    seed: int,
) -> AutoGuide:
    if name == "mean-field":
        return gmm.mean_field_guide(x, k, covariance=covariance, seed=seed)
    return make_guide(name, marginal, init_loc_fn=gmm.init_from_data(x, k, seed))


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


def _elbo(model: Callable[..., None], guide: AutoGuide, x: torch.Tensor) -> float:
    elbo = TraceEnum_ELBO(max_plate_nesting=1, num_particles=ELBO_PARTICLES)
    with torch.no_grad():
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


def _write(fit: GMMFit, x: torch.Tensor, title: str, out: Path) -> None:
    write_fit_outputs(out, fit.result, fit.summary, title)
    save_datatree(fit.tree, out / POSTERIOR_FILE)
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
    figure.savefig(out / "clusters.png", dpi=120)


def _draw_mean(variable: xr.DataArray) -> torch.Tensor:
    return torch.as_tensor(variable.mean(("chain", "draw")).values)


def _covariances(posterior: xr.DataTree) -> xr.DataArray:
    scales = torch.as_tensor(posterior["scales"].values)
    if "corr_chol" in posterior:
        tril = scales.unsqueeze(-1) * torch.as_tensor(posterior["corr_chol"].values)
    else:
        tril = torch.diag_embed(scales)
    return xr.DataArray((tril @ tril.mT).numpy(), dims=("chain", "draw", "component", "r", "c"))
