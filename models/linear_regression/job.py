"""Bayesian linear regression (known noise) by SVI, checked against the exact posterior."""

__all__ = ["DATASETS", "LinearRegressionFit", "fit_linear_regression"]

import functools
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import pandas as pd
import pyro
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO
from pyro.infer.autoguide import AutoGuide

from pyroext.arviz import from_pyro_svi
from pyroext.data import TabularData, load_diabetes, synthetic_regression
from pyroext.diagnose import POSTERIOR_FILE, save_datatree
from pyroext.guides import gaussian_moments, make_guide
from pyroext.infer import SVIResult, run_svi
from pyroext.infer.device import resolve_device
from pyroext.models import linear_regression as lr
from pyroext.report import posterior_summary, write_fit_outputs

FINAL_LR_FRACTION = 0.002

DATASETS: dict[str, Callable[..., TabularData]] = {
    "diabetes": load_diabetes,
    "synthetic": synthetic_regression,
}


class LinearRegressionFit(NamedTuple):
    """Outcome of :func:`fit_linear_regression`.

    Fields:
        guide_name: Registry name of the guide.
        guide: The trained guide.
        result: The runner's result (loss history, steps, time, stop reason).
        summary: Posterior table of the guide's draws beside the exact posterior.
        kl: KL(q || exact posterior) in nats; NaN for a non-Gaussian guide.
        kl_mean_field_optimum: KL of the best fully factorised Gaussian, the floor for
            mean-field guides.
        log_evidence: Exact log p(y), which every ELBO is below.
        elbo: ELBO estimate of the trained guide (2000 particles); ``log_evidence - elbo``
            bounds KL(q || exact posterior) from above, for any guide.
    """

    guide_name: str
    guide: AutoGuide
    result: SVIResult
    summary: pd.DataFrame
    kl: float
    kl_mean_field_optimum: float
    log_evidence: float
    elbo: float

    def describe(self) -> str:
        """One line comparing the fit with the exact posterior."""
        return f"KL(q || exact posterior) = {self.kl:.4f} nats"


def fit_linear_regression(
    guide: str = "mvn",
    *,
    data: str = "diabetes",
    steps: int = 6000,
    lr_init: float = 0.05,
    num_particles: int = 8,
    noise_scale: float = 0.7,
    prior_precision: float = 1.0,
    device: str = "cpu",
    seed: int = 0,
    out: str | Path | None = None,
    progress: bool = True,
    compile: bool | str = "auto",
) -> LinearRegressionFit:
    """Fits Bayesian linear regression with known noise by SVI; compares with the exact posterior.

    Arguments:
        guide: A name from :data:`pyroext.guides.GUIDES` (``dais`` and ``metflow`` are the
            MCMC-in-guide guides, with their default number of steps).
        data: A name from :data:`DATASETS` (standardised features and target).
        steps: Optimiser steps (ClippedAdam, learning rate decayed geometrically to
            ``FINAL_LR_FRACTION`` of ``lr_init``: the diabetes posterior has condition number
            ~400, and a small final rate is what removes the gradient noise along its long axis).
        lr_init: Initial learning rate.
        num_particles: Vectorised ELBO particles per step.
        noise_scale: Known observation noise sd.
        prior_precision: Prior precision of weights and bias.
        device: Torch device.
        seed: Seed of the run.
        out: If given, folder for ``losses.csv``, ``summary.csv``, ``loss.png`` and the
            ArviZ DataTree ``posterior.nc`` (1000 guide draws, readable by ``pyroext diagnose``).
        progress: Show a progress bar.
        compile: Run each SVI step as one compiled graph: ``True``, ``False`` or ``"auto"``
            (long enough runs; see :func:`~pyroext.infer.run_svi`).

    Returns:
        A :class:`LinearRegressionFit`. As with any Pyro autoguide, the guide's parameters live
        in Pyro's global param store, which this function clears first: draw from the guide
        before fitting another guide of the same class.
    """
    if data not in DATASETS:
        raise ValueError(f"data={data!r} is unknown; valid datasets: {', '.join(DATASETS)}")
    dataset = DATASETS[data](dtype=torch.float64)
    target = resolve_device(device)
    x, y = dataset.x.to(target), dataset.y.to(target)
    model = functools.partial(
        lr.model_known_noise, noise_scale=noise_scale, prior_precision=prior_precision
    )
    pyro.clear_param_store()
    approx = make_guide(guide, model)
    result = run_svi(
        model,
        approx,
        x,
        y,
        num_steps=steps,
        optim=pyro.optim.ClippedAdam({"lr": lr_init, "lrd": FINAL_LR_FRACTION ** (1 / steps)}),
        loss=Trace_ELBO(
            num_particles=num_particles, vectorize_particles=True, max_plate_nesting=1
        ),
        device=target,
        seed=seed,
        progress=progress,
        compile=compile,
    )
    options = {"noise_scale": noise_scale, "prior_precision": prior_precision}
    exact = lr.conjugate_posterior(x.cpu(), y.cpu(), **options)
    log_evidence = lr.log_evidence_known_noise(x.cpu(), y.cpu(), **options)
    optimum = lr.mean_field_optimum(exact)
    summary = _summary(model, approx, x, y, dataset.feature_names, exact)
    if out is not None:
        title = f"linear regression ({data}), guide {guide}"
        write_fit_outputs(out, result, summary, title, reference_loss=-log_evidence)
        tree = from_pyro_svi(
            model,
            approx,
            x,
            y,
            num_samples=1000,
            coords={"feature": list(dataset.feature_names)},
            dims={"w": ["feature"]},
        )
        save_datatree(tree, Path(out) / POSTERIOR_FILE)
    return LinearRegressionFit(
        guide,
        approx,
        result,
        summary,
        _kl_to_exact(approx, exact),
        lr.kl_gaussian(optimum.mean, optimum.cov, exact.mean, exact.cov),
        log_evidence,
        _elbo(model, approx, x, y),
    )


ELBO_PARTICLES = 2000


def _elbo(
    model: Callable[..., object], guide: AutoGuide, x: torch.Tensor, y: torch.Tensor
) -> float:
    elbo = Trace_ELBO(num_particles=ELBO_PARTICLES, vectorize_particles=True, max_plate_nesting=1)
    with torch.no_grad():
        return -elbo.loss(model, guide, x, y)


def _kl_to_exact(guide: AutoGuide, exact: lr.GaussianPosterior) -> float:
    try:
        mean, cov = gaussian_moments(guide)
    except TypeError:
        return float("nan")
    return lr.kl_gaussian(mean.double().cpu(), cov.double().cpu(), exact.mean, exact.cov)


def _summary(
    model: Callable[..., object],
    guide: AutoGuide,
    x: torch.Tensor,
    y: torch.Tensor,
    feature_names: tuple[str, ...],
    exact: lr.GaussianPosterior,
) -> pd.DataFrame:
    # Vectorised draws, with y: the MCMC-in-guide guides target the posterior.
    with torch.no_grad(), poutine.block(), pyro.plate("draws", 4000, dim=-2):
        draws = guide(x, y)
    samples = torch.cat([draws["w"].reshape(4000, -1), draws["b"].reshape(4000, 1)], dim=1)
    names = [f"w[{name}]" for name in feature_names] + ["b"]
    table = posterior_summary(samples, names)
    table["exact_mean"] = exact.mean.numpy()
    table["exact_sd"] = exact.cov.diagonal().sqrt().numpy()
    return table
