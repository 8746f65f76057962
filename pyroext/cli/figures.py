"""The figures of ``pyroext diagnose``: posterior, predictive, Pareto k and guide health.

Each figure labels its axes and draws the thresholds it is read against: the 0.7 line of
Pareto k (the PSIS reliability bound for more than 2000 draws), the 1% acceptance floor of a
Markov step and the step-size cap, so a reader sees the verdict without the text report.
"""

__all__ = [
    "PARETO_BAD",
    "PARETO_GOOD",
    "pareto_threshold",
    "plotted_variables",
    "ppc_figure",
    "write_figures",
]

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import arviz_base as azb
import arviz_plots as azp
import matplotlib.pyplot as plt
import numpy as np
import xarray as xr

from pyroext.arviz.groups import SAMPLE_DIMS
from pyroext.diagnostics import KhatResult
from pyroext.guides.health import ACCEPTANCE_FLOOR, GuideHealth

PARETO_GOOD = 0.5
"""Pareto k below which importance sampling is reliable at any draw count (Vehtari et al.)."""
MAX_COORDINATE_PANELS = 8
"""Observed coordinates (features of a multivariate observation) up to which the predictive
check draws one panel each."""
PARETO_BAD = 0.7
"""Pareto k above which PSIS estimates are unreliable (Vehtari et al.)."""


def plotted_variables(dt: xr.DataTree, names: list[str]) -> tuple[list[str], tuple[str, ...]]:
    """Splits ``names`` into the first ones whose panels, one per scalar, fit in ArviZ's
    ``plot.max_subplots``, and the ones left out; constant variables (a Cholesky factor's
    fixed entries, say) are left out too, since a density of one value is an empty panel."""
    posterior = dt["posterior"].to_dataset()
    limit, plotted, left_out, panels = azb.rcParams["plot.max_subplots"], [], [], 0
    for name in names:
        size = math.prod(
            length for dim, length in posterior[name].sizes.items() if dim not in SAMPLE_DIMS
        )
        constant = bool((posterior[name].std(SAMPLE_DIMS) == 0).all())
        if panels + size <= limit and not constant:
            plotted.append(name)
            panels += size
        else:
            left_out.append(name)
    return plotted, tuple(left_out)


def write_figures(
    dt: xr.DataTree,
    loo: Any,
    khat: KhatResult | None,
    health: GuideHealth | None,
    names: list[str],
    out: Path,
) -> list[Path]:
    """Writes the figures that apply to the fit into ``out`` and returns their paths."""
    chains = dt["posterior"].sizes.get("chain", 1)
    figures: dict[str, Callable[[], Any]] = {}
    if names:
        figures["posterior_dist"] = lambda: _readable(azp.plot_dist(dt, var_names=names))
    if names and chains > 1:  # trace and rank plots compare chains
        figures["trace"] = lambda: _readable(azp.plot_trace_dist(dt, var_names=names))
        figures["rank"] = lambda: _readable(azp.plot_rank(dt, var_names=names))
    if {"posterior_predictive", "observed_data"} <= set(dt.children):
        figures["ppc"] = lambda: ppc_figure(dt)
        if loo is not None and _scalar_observations(dt):
            figures["loo_pit"] = lambda: _readable(azp.plot_loo_pit(dt))
    if loo is not None:
        figures["khat"] = lambda: _pareto_k_figure(loo)
    if health is not None and health.measured:
        figures["guide_health"] = lambda: _health_figure(health, khat)
    written = []
    for name, figure in figures.items():
        figure().savefig(out / f"{name}.png", dpi=100)
        written.append(out / f"{name}.png")
    plt.close("all")
    return written


def _readable(plot: Any) -> plt.Figure:
    """The matplotlib figure of an arviz-plots collection, laid out so that no panel title
    runs into the row above."""
    figure = plot.viz["figure"].item()
    figure.set_layout_engine("constrained")
    return figure


def ppc_figure(dt: xr.DataTree) -> plt.Figure:
    """Observed against predictive densities, one panel per observed coordinate beyond the
    observation index (a mixture's 2-D points get one panel per feature, not one density of
    both pooled); histograms for integer-valued data (class labels, counts), where a smoothed
    density would invent values between the integers (see :func:`_discrete`)."""
    observed = _per_coordinate(dt["observed_data"].to_dataset())
    predicted = _per_coordinate(dt["posterior_predictive"].to_dataset())
    discrete = all(_discrete(values.values) for values in observed.values())
    tree = xr.DataTree.from_dict(
        {"observed_data": xr.Dataset(observed), "posterior_predictive": xr.Dataset(predicted)}
    )
    figure = _readable(azp.plot_ppc_dist(tree, kind="hist" if discrete else "kde"))
    for axis in figure.axes:
        axis.set(xlabel="observed value", ylabel="density")
    return figure


def _discrete(values: np.ndarray) -> bool:
    """Labels or counts: integers that repeat (at most half as many distinct values as
    observations); eight integer-rounded measurements are not."""
    integers = np.array_equal(values, np.round(values))
    return bool(integers and 2 * len(np.unique(values)) <= values.size)


def _per_coordinate(group: xr.Dataset) -> dict[str, xr.DataArray]:
    """Each variable split along its dims after the first non-sample one (the observation
    index), as variables named ``name[coordinate]``; one with more than
    :data:`MAX_COORDINATE_PANELS` coordinates (an image's pixels) stays pooled."""
    split = {}
    for name, variable in group.data_vars.items():
        extra = [dim for dim in variable.dims if dim not in SAMPLE_DIMS][1:]
        if not extra or math.prod(variable.sizes[dim] for dim in extra) > MAX_COORDINATE_PANELS:
            split[str(name)] = variable
            continue
        stacked = variable.stack(coordinate=extra)
        for index in range(stacked.sizes["coordinate"]):
            label = ",".join(
                str(part) for part in np.atleast_1d(stacked["coordinate"].values[index])
            )
            split[f"{name}[{label}]"] = stacked.isel(coordinate=index, drop=True)
    return split


def pareto_threshold(loo: Any) -> float:
    """The Pareto k above which a LOO estimate is unreliable: ``min(1 - 1/log10(S), 0.7)``
    for ``S`` draws, as arviz-stats reports it."""
    return float(getattr(loo, "good_k", None) or PARETO_BAD)


def _pareto_k_figure(loo: Any) -> plt.Figure:
    k, threshold = np.asarray(loo.pareto_k).ravel(), pareto_threshold(loo)
    figure, axis = plt.subplots(figsize=(7, 3.5), layout="constrained")
    bad = k > threshold
    axis.scatter(np.flatnonzero(~bad), k[~bad], s=8, color="C0", label=f"k <= {threshold:.2f}")
    axis.scatter(
        np.flatnonzero(bad), k[bad], s=8, color="C3", label=f"k > {threshold:.2f}: {bad.sum()}"
    )
    axis.axhline(PARETO_GOOD, color="grey", ls=":", lw=1, label=f"{PARETO_GOOD} (good)")
    axis.axhline(threshold, color="C3", ls="--", lw=1, label=f"{threshold:.2f} (unreliable above)")
    axis.set(
        xlabel="observation", ylabel="Pareto k", title=f"PSIS-LOO Pareto k, {len(k)} observations"
    )
    axis.legend(fontsize=8, loc="best")
    return figure


def _health_figure(health: GuideHealth, khat: KhatResult | None) -> plt.Figure:
    """Acceptance and step size by Markov step, against the floor and the cap, and the
    guide's k-hat against its thresholds."""
    panels = [values for values in (health.acceptance, health.step_size) if values is not None]
    figure, axes = plt.subplots(1, len(panels) + 1, figsize=(4 * (len(panels) + 1), 3.2))
    figure.set_layout_engine("constrained")
    axes = list(np.atleast_1d(axes))
    if health.acceptance is not None:
        _by_step(
            axes.pop(0), health.acceptance, "acceptance probability", ACCEPTANCE_FLOOR, "1% floor"
        )
    if health.step_size is not None:
        cap = health.step_size_max
        _by_step(
            axes.pop(0),
            health.step_size,
            "step size (base scales)",
            cap,
            f"cap {cap:g}" if cap else None,
        )
    _khat_panel(axes.pop(0), khat)
    figure.suptitle(
        f"guide health: {health.guide}"
        + ("" if not health.problems else " (problems: see report)")
    )
    return figure


def _by_step(
    axis: plt.Axes, values: Any, label: str, line: float | None, line_label: str | None
) -> None:
    steps = np.arange(1, len(values) + 1)
    axis.bar(steps, np.asarray(values), color="C0")
    if line is not None:
        axis.axhline(line, color="C3", ls="--", lw=1, label=line_label)
        axis.legend(fontsize=8)
    axis.set(xlabel="Markov step", ylabel=label, xticks=steps, title=f"{label} by step")


def _khat_panel(axis: plt.Axes, khat: KhatResult | None) -> None:
    if khat is None:
        axis.text(0.5, 0.5, "no k-hat (see report)", ha="center", va="center")
        axis.set_axis_off()
        return
    axis.axhspan(-0.5, PARETO_GOOD, color="C2", alpha=0.15, label=f"< {PARETO_GOOD} good")
    axis.axhspan(PARETO_GOOD, khat.threshold, color="C1", alpha=0.15, label="ok")
    axis.axhline(
        khat.threshold, color="C3", ls="--", lw=1, label=f"threshold {khat.threshold:.2f}"
    )
    axis.plot([0], [khat.khat], "o", color="k", ms=8, label=f"k-hat {khat.khat:.2f}")
    top = max(1.0, khat.khat + 0.1) if np.isfinite(khat.khat) else 1.0
    axis.set(xticks=[], ylim=(-0.5, top), ylabel="Pareto k-hat of p/q", title="k-hat of the guide")
    axis.legend(fontsize=8, loc="upper left")


def _scalar_observations(dt: xr.DataTree) -> bool:
    """Whether each observed value has its own log-likelihood term, as LOO-PIT needs (a
    multivariate observation, e.g. a mixture's 2-D point, has one term for several values)."""
    observed, pointwise = dt["observed_data"], dt["log_likelihood"]
    return all(
        set(observed[name].dims) == set(pointwise[name].dims) - {"chain", "draw"}
        for name in pointwise.data_vars
        if name in observed
    )
