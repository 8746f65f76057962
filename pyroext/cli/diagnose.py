"""Diagnosing a saved fit: summary table, k-hat, LOO and plots from its DataTree."""

__all__ = ["DiagnoseReport", "diagnose_run", "print_report"]

import math
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import arviz_base as azb
import arviz_plots as azp
import arviz_stats as azs
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import xarray as xr

from pyroext.arviz.groups import SAMPLE_DIMS
from pyroext.diagnostics import KhatResult, drop_nonfinite_draws, vi_khat, vi_loo
from pyroext.diagnostics.khat import MIN_SAMPLES
from pyroext.runs import POSTERIOR_FILE, RunDir


class DiagnoseReport(NamedTuple):
    """What :func:`diagnose_run` found and wrote.

    Fields:
        summary: arviz-stats summary of the posterior (diagnostic columns only with 2+ chains).
        khat: Pareto k-hat of the importance ratios for variational fits, else None.
        loo: PSIS-LOO (approximate-posterior corrected for variational fits), or None without
            a log_likelihood group.
        files: Every file written.
        skipped: Why k-hat and LOO were not computed, if they were not (a point-mass guide,
            e.g. MAP, has no spread to smooth).
        unplotted: The posterior variables left out of the plots, which show at most
            ArviZ's ``plot.max_subplots`` panels (e.g. a network's weights); the summary
            table has them all.
        dropped: Number of draws left out for holding NaN or infinite values (with a
            warning); everything above is computed from the others.
        no_loo: Why LOO was not computed although k-hat could be (no ``log_likelihood``
            group, or too few draws), if it was not.
    """

    summary: pd.DataFrame
    khat: KhatResult | None
    loo: Any
    files: list[Path]
    skipped: str | None = None
    unplotted: tuple[str, ...] = ()
    dropped: int = 0
    no_loo: str | None = None


def diagnose_run(
    run_dir: str | os.PathLike, out: str | os.PathLike | None = None
) -> DiagnoseReport:
    """Reads ``RUN_DIR/posterior.nc`` and writes summary, k-hat, LOO and plots.

    Writes ``summary.csv``, ``khat.csv`` (variational fits), ``loo.csv`` and PNG plots:
    posterior distributions, trace and rank plots (MCMC, 2+ chains), posterior predictive,
    LOO-PIT (when every observed value has its own log-likelihood term) and Pareto k-hat.
    Summary and posterior plots cover the sampled variables when the export lists them.

    Arguments:
        run_dir: Folder holding ``posterior.nc`` (as written by ``pyroext fit``).
        out: Output folder; ``run_dir/diagnostics`` by default.

    Returns:
        A :class:`DiagnoseReport`.

    Raises:
        FileNotFoundError: If ``run_dir`` does not exist or has no ``posterior.nc``.
        NotADirectoryError: If ``run_dir`` is a file.
        ValueError: If ``posterior.nc`` is truncated, corrupt (checksum mismatch), has no
            posterior group, or only draws with NaN or infinite values.

    Warns:
        UserWarning: When draws with NaN or infinite values are left out (their number and
            where they were).
    """
    run = RunDir.open(run_dir)
    dt, dropped = _finite_tree(run.read_posterior(), run.posterior)
    out = Path(out) if out is not None else Path(run_dir) / "diagnostics"
    out.mkdir(parents=True, exist_ok=True)
    chains = dt["posterior"].sizes.get("chain", 1)
    names = _sampled_variables(dt)
    summary = azs.summary(dt, var_names=names, kind="all" if chains > 1 else "stats")
    files = [_write_csv(pd.DataFrame(summary), out / "summary.csv")]
    plotted, unplotted = _plotted_variables(dt, names)
    stats = dt.get("sample_stats", xr.DataTree()).data_vars
    variational = "lq" in stats
    skipped = _why_no_khat(dt) if variational else None
    khat = vi_khat(dt) if variational and skipped is None else None
    if khat is not None:
        files.append(_write_csv(_khat_table(khat), out / "khat.csv"))
    no_loo = _why_no_loo(dt) if skipped is None else None
    loo = _loo(dt, variational) if skipped is None and no_loo is None else None
    if loo is not None:
        files.append(_write_csv(_loo_table(loo), out / "loo.csv"))
    files += _plots(dt, loo, chains, plotted, out)
    return DiagnoseReport(summary, khat, loo, files, skipped, unplotted, dropped, no_loo)


def _finite_tree(dt: xr.DataTree, source: Path) -> tuple[xr.DataTree, int]:
    """The tree checked for a posterior, without the draws holding NaN or infinite values,
    and how many those were; a warning names them."""
    if "posterior" not in dt.children or not dt["posterior"].data_vars:
        groups = ", ".join(dt.children) or "none"
        raise ValueError(
            f"{source} has no posterior group with variables (groups: {groups}); it is not "
            f"a fit's {POSTERIOR_FILE}: write one with `pyroext fit <model> ... --out <folder>`"
        )
    if not set(SAMPLE_DIMS) <= set(dt["posterior"].dims):
        raise ValueError(
            f"{source}: the posterior has dims {tuple(dt['posterior'].dims)}, without the "
            "sample dims ('chain', 'draw') that ArviZ needs"
        )
    try:
        finite, found = drop_nonfinite_draws(dt)
    except ValueError as error:
        raise ValueError(f"{source}: {error}") from error
    if len(found.draws):
        warnings.warn(
            f"{source}: {found.describe()}; they are left out, and the summary, k-hat and LOO "
            f"use the other {found.total - len(found.draws)} (which flatters the fit: the "
            "dropped draws are where it failed)",
            UserWarning,
            stacklevel=3,
        )
    return finite, len(found.draws)


def _why_no_khat(dt: xr.DataTree) -> str | None:
    """Why k-hat and LOO cannot be computed from a variational fit's draws, if they cannot."""
    lq = dt["sample_stats"]["lq"]
    if lq.size < MIN_SAMPLES:
        return f"{lq.size} draws are too few for k-hat and LOO (at least {MIN_SAMPLES})"
    if float(lq.std()) == 0.0:
        return "the guide is a point mass (all draws equal): no k-hat or LOO"
    return None


def _why_no_loo(dt: xr.DataTree) -> str | None:
    """Why LOO cannot be computed, if it cannot: it needs pointwise log-likelihoods."""
    if "log_likelihood" not in dt.children or not dt["log_likelihood"].data_vars:
        return (
            "no LOO: the tree has no log_likelihood group (export with log_likelihood=True "
            "and observed sites)"
        )
    draws = math.prod(dt["posterior"].sizes[dim] for dim in SAMPLE_DIMS)
    if draws < MIN_SAMPLES:
        return f"no LOO: {draws} draws are too few (at least {MIN_SAMPLES})"
    return None


def _loo(dt: xr.DataTree, variational: bool) -> Any:
    return vi_loo(dt) if variational else azs.loo(dt, pointwise=True)


def _khat_table(khat: KhatResult) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "khat": khat.khat,
                "threshold": khat.threshold,
                "num_samples": khat.num_samples,
                "interpretation": khat.interpretation,
            }
        ]
    )


def _loo_table(loo: Any) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "elpd_loo": loo.elpd,
                "se": loo.se,
                "p_loo": loo.p,
                "n_samples": loo.n_samples,
                "n_data_points": loo.n_data_points,
                "max_pareto_k": float(loo.pareto_k.max()),
                "warning": loo.warning,
            }
        ]
    )


def _sampled_variables(dt: xr.DataTree) -> list[str] | None:
    """The posterior's sampled variables, when the export lists them: per-observation
    deterministics (e.g. a mixture's responsibilities) would add a row and a panel per point."""
    names = dt["posterior"].attrs.get("sampled_variables")
    return [str(name) for name in np.atleast_1d(names)] if names is not None else None


def _plotted_variables(
    dt: xr.DataTree, names: list[str] | None
) -> tuple[list[str], tuple[str, ...]]:
    """Splits ``names`` (all posterior variables if None) into the first ones whose panels,
    one per scalar, fit in ArviZ's ``plot.max_subplots``, and the ones left out."""
    posterior = dt["posterior"].to_dataset()
    limit, plotted, left_out, panels = azb.rcParams["plot.max_subplots"], [], [], 0
    for name in names if names is not None else list(posterior.data_vars):
        size = math.prod(
            length for dim, length in posterior[name].sizes.items() if dim not in SAMPLE_DIMS
        )
        if panels + size <= limit:
            plotted.append(name)
            panels += size
        else:
            left_out.append(name)
    return plotted, tuple(left_out)


def _plots(dt: xr.DataTree, loo: Any, chains: int, names: list[str], out: Path) -> list[Path]:
    plots: dict[str, Callable[[], Any]] = {}
    if names:
        plots["posterior_dist"] = lambda: azp.plot_dist(dt, var_names=names)
    if names and chains > 1:  # trace and rank plots compare chains
        plots["trace"] = lambda: azp.plot_trace_dist(dt, var_names=names)
        plots["rank"] = lambda: azp.plot_rank(dt, var_names=names)
    if {"posterior_predictive", "observed_data"} <= set(dt.children):
        plots["ppc"] = lambda: azp.plot_ppc_dist(dt)
        if loo is not None and _scalar_observations(dt):
            plots["loo_pit"] = lambda: azp.plot_loo_pit(dt)
    if loo is not None:
        plots["khat"] = lambda: azp.plot_khat(loo)
    written = []
    for name, plot in plots.items():
        plot().savefig(out / f"{name}.png")
        written.append(out / f"{name}.png")
    plt.close("all")
    return written


def _scalar_observations(dt: xr.DataTree) -> bool:
    """Whether each observed value has its own log-likelihood term, as LOO-PIT needs (a
    multivariate observation, e.g. a mixture's 2-D point, has one term for several values)."""
    observed, pointwise = dt["observed_data"], dt["log_likelihood"]
    return all(
        set(observed[name].dims) == set(pointwise[name].dims) - {"chain", "draw"}
        for name in pointwise.data_vars
        if name in observed
    )


def _write_csv(table: pd.DataFrame, path: Path) -> Path:
    table.to_csv(path)
    return path


def print_report(report: DiagnoseReport) -> None:
    """Prints what :func:`diagnose_run` found, as ``pyroext diagnose`` shows it."""
    print(report.summary.to_string())
    if report.khat is not None:
        print(f"Pareto k-hat of p/q: {report.khat.khat:.3f} ({report.khat.interpretation})")
    for note in (report.skipped, report.no_loo):
        if note is not None:
            print(note)
    if report.unplotted:
        print(f"not plotted (too many panels; in summary.csv): {', '.join(report.unplotted)}")
    if report.loo is not None:
        loo = report.loo
        print(f"elpd_loo {loo.elpd:.2f} (SE {loo.se:.2f}), p_loo {loo.p:.2f}")
    print("wrote", ", ".join(path.name for path in report.files))
