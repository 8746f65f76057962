"""Variational simulation-based calibration (VSBC, Yao et al. 2018, §4).

For each simulation, VSBC draws parameters ``theta*`` and data ``y`` from the model's prior
predictive, refits a fresh guide to ``y`` and records, for every scalar parameter, the PIT value
``p = P_q(theta < theta*)``: the fraction of guide draws below the truth. A calibrated guide
gives uniform ``p``, because ``theta*`` is a draw from the exact posterior given ``y``. A biased
guide makes the distribution of ``p`` asymmetric (mostly below 0.5 when the guide overestimates
the parameter), which Yao et al. check with a Kolmogorov-Smirnov test of ``p`` against
``1 - p``.
"""

__all__ = ["VSBCResult", "plot_vsbc", "vsbc"]

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pyro
import torch
from arviz_base import from_dict
from arviz_plots import plot_ecdf_pit
from arviz_stats.base import array_stats
from matplotlib import pyplot as plt
from pyro import poutine
from pyro.infer import Predictive
from pyro.poutine.util import site_is_subsample
from scipy import stats

from pyroext.diagnostics.khat import _check_int
from pyroext.infer import run_svi


class VSBCResult(NamedTuple):
    """What :func:`vsbc` returns, keyed by scalar parameter (``"mu"``, ``"w[0]"``, ...).

    Parameters appear in model order; a site of shape ``(2, 3)`` gives ``"z[0,0]"`` to
    ``"z[1,2]"`` in row-major order.

    Fields:
        pit: PIT values ``P_q(theta < theta*)`` in ``[0, 1]``, one per simulation.
        truth: The parameter values ``theta*`` drawn from the prior, one per simulation.
        uniformity_pvalue: p-value of the uniformity test of the PIT values
            (:func:`arviz_stats.base.array_stats.uniformity_test`, method ``"pot_c"``: the
            pointwise order-statistics test with Cauchy combination); small means miscalibrated.
        symmetry_pvalue: p-value of Yao et al.'s asymmetry check, the two-sample
            Kolmogorov-Smirnov test of ``p`` against ``1 - p``; small means the guide is biased.
    """

    pit: dict[str, np.ndarray]
    truth: dict[str, np.ndarray]
    uniformity_pvalue: dict[str, float]
    symmetry_pvalue: dict[str, float]


def vsbc(
    model: Callable[..., Any],
    make_guide: Callable[[Callable[..., Any]], Callable[..., Any]],
    *args: Any,
    num_simulations: int = 100,
    num_steps: int = 1000,
    num_samples: int = 1000,
    observed_site: str | Sequence[str] = "obs",
    fit: Callable[..., Any] | None = None,
    seed: int = 0,
    **kwargs: Any,
) -> VSBCResult:
    """Variational simulation-based calibration of a guide family on a model.

    Every simulation runs with its own seed drawn from ``seed``, so results do not depend on
    whether ``fit`` reseeds Pyro. The caller's RNG state and param store are restored at the
    end; in between, the param store is cleared before each fit.

    Arguments:
        model: A Pyro model that samples the observed sites when called with ``args`` and
            ``kwargs`` (for example ``y=None``). All its latent sample sites are checked,
            so they should be continuous.
        make_guide: Builds a fresh, vectorizable guide from the model conditioned on the
            simulated data, e.g. ``pyro.infer.autoguide.AutoNormal``.
        args: Arguments of model and guide.
        num_simulations: Number of simulated data sets, >= 2.
        num_steps: Optimiser steps per fit, >= 1.
        num_samples: Guide draws per fit for the PIT values, >= 1.
        observed_site: Name(s) of the observed sample sites to simulate and condition on.
        fit: Trains the guide in place; called as ``fit(model, guide, *args,
            num_steps=num_steps, **kwargs)`` with the conditioned model. By default
            :func:`pyroext.infer.run_svi` with its default loss and optimiser.
        seed: Seed of the whole study, >= 0.
        kwargs: Keyword arguments of model and guide.

    Returns:
        A :class:`VSBCResult`.

    Raises:
        ValueError: For an invalid count or seed, an observed site the model does not sample,
            or a model without latent sites.

    References:
        Yao, Vehtari, Simpson, Gelman. "Yes, but did it work?: Evaluating variational
        inference". ICML 2018. https://arxiv.org/abs/1802.02538
    """
    _check_int("num_simulations", num_simulations, minimum=2)
    _check_int("num_steps", num_steps, minimum=1)
    _check_int("num_samples", num_samples, minimum=1)
    _check_int("seed", seed, minimum=0)
    observed = [observed_site] if isinstance(observed_site, str) else list(observed_site)
    seeds = np.random.SeedSequence(seed).generate_state(num_simulations)
    rng_state, params = pyro.util.get_rng_state(), pyro.get_param_store().get_state()
    try:
        runs = []
        for sim_seed in seeds:
            pyro.set_rng_seed(int(sim_seed))
            truth, data = _simulate(model, observed, args, kwargs)
            conditioned = poutine.condition(model, data=data)
            pyro.clear_param_store()
            guide = make_guide(conditioned)
            (fit or _default_fit)(conditioned, guide, *args, num_steps=num_steps, **kwargs)
            runs.append((truth, _pit(guide, truth, num_samples, args, kwargs)))
    finally:
        pyro.util.set_rng_state(rng_state)
        pyro.get_param_store().set_state(params)
    return _summarise(runs)


def plot_vsbc(result: VSBCResult, path: str | os.PathLike, **kwargs: Any) -> Path:
    """Saves the PIT-ECDF difference plot of every parameter's PIT values as an image.

    Each panel shows the ECDF of the PIT values minus the uniform CDF, with the p-value of the
    same ``pot_c`` uniformity test as :attr:`VSBCResult.uniformity_pvalue`, drawn by
    :func:`arviz_plots.plot_ecdf_pit`. Nothing is shown on screen and the figure is closed.

    Arguments:
        result: The output of :func:`vsbc`.
        path: Image file to write; its suffix picks the format (``.png``, ``.pdf``, ...).
        kwargs: Passed to :func:`arviz_plots.plot_ecdf_pit`, e.g. ``method="envelope"`` for a
            simultaneous confidence band.

    Returns:
        The path written.
    """
    tree = from_dict({"vsbc": {name: pit[None, :] for name, pit in result.pit.items()}})
    collection = plot_ecdf_pit(tree, group="vsbc", backend="matplotlib", **kwargs)
    path = Path(path)
    collection.savefig(path)
    plt.close(collection.viz["figure"].item())
    return path


def _default_fit(
    model: Callable[..., Any], guide: Callable[..., Any], *args: Any, num_steps: int, **kwargs: Any
) -> None:
    run_svi(model, guide, *args, num_steps=num_steps, model_kwargs=kwargs, progress=False)


def _simulate(
    model: Callable[..., Any], observed: list[str], args: tuple, kwargs: dict[str, Any]
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """One prior predictive draw: (latent values, observed values)."""
    with torch.no_grad(), poutine.block():
        trace = poutine.trace(model).get_trace(*args, **kwargs)
    sites = {
        name: site
        for name, site in trace.nodes.items()
        if site["type"] == "sample" and not site_is_subsample(site)
    }
    for name in observed:
        if name not in sites or sites[name]["is_observed"]:
            raise ValueError(
                f"observed_site {name!r} is not sampled by the model with these arguments; "
                "pass arguments under which the model simulates it (e.g. y=None)"
            )
    truth = {
        name: site["value"]
        for name, site in sites.items()
        if name not in observed
        and not site["is_observed"]
        and not site["infer"].get("_deterministic")
    }
    if not truth:
        raise ValueError("the model has no latent sample sites to calibrate")
    return truth, {name: sites[name]["value"] for name in observed}


def _pit(
    guide: Callable[..., Any],
    truth: dict[str, torch.Tensor],
    num_samples: int,
    args: tuple,
    kwargs: dict[str, Any],
) -> dict[str, np.ndarray]:
    """Fraction of guide draws below the truth, per latent site and element (flattened)."""
    predictive = Predictive(guide, num_samples=num_samples, parallel=True, return_sites=[*truth])
    with torch.no_grad():
        draws = predictive(*args, **kwargs)
    pit = {}
    for name, value in truth.items():
        # Predictive left-pads draws with size-1 plate dims; flattening drops them.
        flat = draws[name].detach().reshape(num_samples, -1)
        pit[name] = (flat < value.detach().reshape(-1)).double().mean(0).cpu().numpy()
    return pit


def _summarise(
    runs: list[tuple[dict[str, torch.Tensor], dict[str, np.ndarray]]],
) -> VSBCResult:
    """Stacks the per-simulation values into per-scalar-parameter arrays and tests them."""
    pit, truth = {}, {}
    for site, value in runs[0][0].items():
        truths = np.stack([run_truth[site].reshape(-1).cpu().numpy() for run_truth, _ in runs])
        pits = np.stack([run_pit[site] for _, run_pit in runs])
        for i, name in enumerate(_scalar_names(site, value.shape)):
            pit[name], truth[name] = pits[:, i], truths[:, i]
    pvalues = array_stats.uniformity_test(np.stack(list(pit.values())), axis=-1)[0]
    return VSBCResult(
        pit=pit,
        truth=truth,
        uniformity_pvalue={name: float(p) for name, p in zip(pit, pvalues, strict=True)},
        symmetry_pvalue={name: float(stats.ks_2samp(p, 1 - p).pvalue) for name, p in pit.items()},
    )


def _scalar_names(site: str, shape: torch.Size) -> list[str]:
    """``"mu"`` for a scalar site, ``"w[0]"``, ``"w[1]"``, ... (row-major) otherwise."""
    if not shape:
        return [site]
    return [f"{site}[{','.join(map(str, index))}]" for index in np.ndindex(tuple(shape))]
