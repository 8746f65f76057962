"""Bayesian linear regression (known noise) by SVI, checked against the exact posterior."""

__all__ = [
    "DATASETS",
    "JOB",
    "LinearRegressionConfig",
    "LinearRegressionFit",
    "fit_linear_regression",
]

import dataclasses
import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import pandas as pd
import pyro
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO
from pyro.infer.autoguide import AutoGuide

from pyroext.arviz import from_pyro_svi
from pyroext.checks import check_counts, check_learning_rate, check_positive
from pyroext.data import TabularData, load_diabetes, synthetic_regression
from pyroext.guides import GUIDES, gaussian_moments, make_guide
from pyroext.infer import SVIResult, run_svi
from pyroext.infer.checkpoint import preserved_rng_state
from pyroext.infer.device import resolve_device
from pyroext.jobs import Job, RunConfig, configure, option
from pyroext.models import linear_regression as lr
from pyroext.report import posterior_summary
from pyroext.runs import RunDir

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
        """One line comparing the fit with the exact posterior: the KL where it has a closed
        form (Gaussian guides), and for every guide the ELBO gap, which bounds it from above."""
        gap = f"ELBO gap to log p(y) = {self.log_evidence - self.elbo:.4f} nats"
        if math.isnan(self.kl):  # an MCMC-in-guide guide's density has no closed-form KL
            return f"{gap} (an upper bound on KL(q || exact posterior))"
        return f"KL(q || exact posterior) = {self.kl:.4f} nats; {gap}"


@dataclasses.dataclass(frozen=True, kw_only=True)
class LinearRegressionConfig(RunConfig):
    """Options of :func:`fit_linear_regression`, beside the run options of
    :class:`~pyroext.jobs.RunConfig`.

    Fields:
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
    """

    guide: str = option("mvn", "variational guide", choices=tuple(GUIDES))
    data: str = option("diabetes", "dataset", choices=tuple(DATASETS))
    steps: int = option(6000, "SVI steps")
    lr_init: float = option(0.05, "initial learning rate (decayed to 0.2% of it)")
    num_particles: int = option(8, "vectorised ELBO particles per step")
    noise_scale: float = option(0.7, "known observation noise sd")
    prior_precision: float = option(1.0, "prior precision of weights and bias")

    def __post_init__(self) -> None:
        if self.data not in DATASETS:
            valid = ", ".join(DATASETS)
            raise ValueError(f"data={self.data!r} is unknown; valid datasets: {valid}")
        check_counts(steps=self.steps, num_particles=self.num_particles)
        check_learning_rate(self.lr_init)
        check_positive(noise_scale=self.noise_scale, prior_precision=self.prior_precision)


def fit_linear_regression(
    config: LinearRegressionConfig | None = None, /, **options: Any
) -> LinearRegressionFit:
    """Fits Bayesian linear regression with known noise by SVI; compares with the exact posterior.

    Arguments:
        config: The options (default :class:`LinearRegressionConfig`'s).
        options: Fields of :class:`LinearRegressionConfig` to replace, e.g. ``guide="dais"``.

    Returns:
        A :class:`LinearRegressionFit`. As with any Pyro autoguide, the guide's parameters live
        in Pyro's global param store, which this function clears first: draw from the guide
        before fitting another guide of the same class. With ``out``, its folder holds
        ``losses.csv``, ``summary.csv``, ``loss.png`` and the ArviZ DataTree ``posterior.nc``
        (1000 guide draws, readable by ``pyroext diagnose``).
    """
    config = configure(config, LinearRegressionConfig, options)
    dataset = DATASETS[config.data](dtype=torch.float64)
    device = resolve_device(config.device)
    run = config.run_dir()
    dataset = dataset._replace(x=dataset.x.to(device), y=dataset.y.to(device))
    x, y = dataset.x, dataset.y
    model = functools.partial(
        lr.model_known_noise,
        noise_scale=config.noise_scale,
        prior_precision=config.prior_precision,
    )
    pyro.clear_param_store()
    approx = make_guide(config.guide, model)
    result = _train(config, model, approx, x, y)
    fit = _evaluate(config, model, approx, result, dataset)
    if run is not None:
        _write(fit, model, dataset, config, run)
    return fit


def _train(
    config: LinearRegressionConfig,
    model: Callable[..., object],
    guide: AutoGuide,
    x: torch.Tensor,
    y: torch.Tensor,
) -> SVIResult:
    decay = FINAL_LR_FRACTION ** (1 / config.steps)
    return run_svi(
        model,
        guide,
        x,
        y,
        num_steps=config.steps,
        optim=pyro.optim.ClippedAdam({"lr": config.lr_init, "lrd": decay}),
        loss=Trace_ELBO(
            num_particles=config.num_particles, vectorize_particles=True, max_plate_nesting=1
        ),
        device=x.device,
        seed=config.seed,
        progress=config.progress,
        compile=config.compile,
    )


def _evaluate(
    config: LinearRegressionConfig,
    model: Callable[..., object],
    guide: AutoGuide,
    result: SVIResult,
    data: TabularData,
) -> LinearRegressionFit:
    """The fit against the exact posterior; ``data`` is on the run's device."""
    x, y = data.x.cpu(), data.y.cpu()
    options = {"noise_scale": config.noise_scale, "prior_precision": config.prior_precision}
    exact = lr.conjugate_posterior(x, y, **options)
    optimum = lr.mean_field_optimum(exact)
    return LinearRegressionFit(
        config.guide,
        guide,
        result,
        _summary(model, guide, data.x, data.y, data.feature_names, exact),
        _kl_to_exact(guide, exact),
        lr.kl_gaussian(optimum.mean, optimum.cov, exact.mean, exact.cov),
        lr.log_evidence_known_noise(x, y, **options),
        _elbo(model, guide, data.x, data.y),
    )


def _write(
    fit: LinearRegressionFit,
    model: Callable[..., object],
    dataset: TabularData,
    config: LinearRegressionConfig,
    run: RunDir,
) -> None:
    title = f"linear regression ({config.data}), guide {config.guide}"
    run.write_training(fit.result, fit.summary, title, reference_loss=-fit.log_evidence)
    tree = from_pyro_svi(
        model,
        fit.guide,
        dataset.x,
        dataset.y,
        num_samples=1000,
        coords={"feature": list(dataset.feature_names)},
        dims={"w": ["feature"]},
    )
    run.write_posterior(tree)
    run.write_manifest(JOB.name, config)


ELBO_PARTICLES = 2000


def _elbo(
    model: Callable[..., object], guide: AutoGuide, x: torch.Tensor, y: torch.Tensor
) -> float:
    elbo = Trace_ELBO(num_particles=ELBO_PARTICLES, vectorize_particles=True, max_plate_nesting=1)
    # The estimate leaves the generators as they were: the export's draws follow the summary's.
    with torch.no_grad(), preserved_rng_state():
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


JOB = Job(
    "linear-regression",
    "Bayesian linear regression against its exact posterior",
    LinearRegressionConfig,
    fit_linear_regression,
    quick=("--steps", "20"),
)
