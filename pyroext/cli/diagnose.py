"""Diagnosing a saved fit: summary table, k-hat, LOO and plots from its DataTree."""

__all__ = [
    "DETERMINISTIC_MAX_VALUES",
    "INTERVAL",
    "DiagnoseReport",
    "diagnose_run",
    "loo_verdict",
    "print_report",
]

import math
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import arviz_stats as azs
import numpy as np
import pandas as pd
import xarray as xr

from pyroext.arviz.groups import SAMPLE_DIMS
from pyroext.cli.figures import pareto_threshold, plotted_variables, write_figures
from pyroext.diagnostics import KhatResult, drop_nonfinite_draws, vi_khat, vi_loo
from pyroext.diagnostics.khat import MIN_SAMPLES
from pyroext.guides.health import GuideHealth, health_from_stats
from pyroext.runs import POSTERIOR_FILE, RunDir

DETERMINISTIC_MAX_VALUES = 100
"""Deterministic sites of at most this many values are summarised by default."""
INTERVAL = 0.9
"""Mass of the central intervals, as ``fit`` prints them (5% and 95%)."""


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
        health: For an MCMC-in-guide fit, acceptance and step size per Markov step from the
            exported draws, with the problems found; else None.
        divergences: Number of divergent transitions of an MCMC fit (NUTS/HMC), else None.
    """

    summary: pd.DataFrame
    khat: KhatResult | None
    loo: Any
    files: list[Path]
    skipped: str | None = None
    unplotted: tuple[str, ...] = ()
    dropped: int = 0
    no_loo: str | None = None
    health: GuideHealth | None = None
    divergences: int | None = None


def diagnose_run(
    run_dir: str | os.PathLike,
    out: str | os.PathLike | None = None,
    var_names: Sequence[str] | None = None,
) -> DiagnoseReport:
    """Reads ``RUN_DIR/posterior.nc`` and writes summary, k-hat, LOO and plots.

    Writes ``summary.csv`` (mean, sd and the 5%-95% interval, as ``fit`` prints; with 2+
    chains also R-hat and ESS), ``khat.csv`` (variational fits), ``loo.csv`` and PNG figures
    (:mod:`pyroext.cli.figures`): posterior distributions, trace and rank plots (MCMC, 2+
    chains), posterior predictive, LOO-PIT (when every observed value has its own
    log-likelihood term), Pareto k per observation and, for MCMC-in-guide guides, their
    health (acceptance and step size by step, and k-hat).

    Arguments:
        run_dir: Folder holding ``posterior.nc`` (as written by ``pyroext fit``).
        out: Output folder; ``run_dir/diagnostics`` by default.
        var_names: Posterior variables to summarise and plot; by default the sampled ones
            and the deterministic ones of at most :data:`DETERMINISTIC_MAX_VALUES` values
            (a per-observation quantity, such as a mixture's responsibilities, only when
            named here).

    Returns:
        A :class:`DiagnoseReport`.

    Raises:
        FileNotFoundError: If ``run_dir`` does not exist or has no ``posterior.nc``.
        NotADirectoryError: If ``run_dir`` is a file.
        ValueError: If ``posterior.nc`` is truncated, corrupt (checksum mismatch), has no
            posterior group, or only draws with NaN or infinite values, or ``var_names``
            names a variable the posterior does not have.

    Warns:
        UserWarning: When draws with NaN or infinite values are left out (their number and
            where they were).
    """
    run = RunDir.open(run_dir)
    dt, dropped = _finite_tree(run.read_posterior(), run.posterior)
    out = Path(out) if out is not None else Path(run_dir) / "diagnostics"
    out.mkdir(parents=True, exist_ok=True)
    chains = dt["posterior"].sizes.get("chain", 1)
    names = _summarised_variables(dt, var_names)
    kind = "all" if chains > 1 else "stats"
    summary = azs.summary(dt, var_names=names, kind=kind, ci_prob=INTERVAL, ci_kind="eti")
    files = [_write_csv(pd.DataFrame(summary), out / "summary.csv")]
    plotted, unplotted = plotted_variables(dt, names)
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
    health = _health(dt)
    files += write_figures(dt, loo, khat, health, plotted, out)
    divergences = int(dt["sample_stats"]["diverging"].sum()) if "diverging" in stats else None
    return DiagnoseReport(
        summary, khat, loo, files, skipped, unplotted, dropped, no_loo, health, divergences
    )


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
    # arviz_stats warns at length about high Pareto k; loo_verdict says it in one line.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Pp]areto.*")
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


def _summarised_variables(dt: xr.DataTree, var_names: Sequence[str] | None) -> list[str]:
    """``var_names`` checked against the posterior, or by default the sampled variables and
    the deterministic ones small enough to read (per-observation ones would add a row and a
    panel per data point)."""
    posterior = dt["posterior"]
    available = list(posterior.data_vars)
    if var_names is not None:
        unknown = [name for name in var_names if name not in available]
        if unknown:
            raise ValueError(
                f"var_names: {', '.join(unknown)} not in the posterior; valid names: "
                f"{', '.join(available)}"
            )
        return list(var_names)
    sampled = posterior.attrs.get("sampled_variables")
    sampled = {str(name) for name in np.atleast_1d(sampled)} if sampled is not None else None
    return [
        name
        for name in available
        if sampled is None
        or name in sampled
        or _values(posterior[name]) <= DETERMINISTIC_MAX_VALUES
    ]


def _values(variable: xr.DataArray) -> int:
    return math.prod(size for dim, size in variable.sizes.items() if dim not in SAMPLE_DIMS)


def _health(dt: xr.DataTree) -> GuideHealth | None:
    """The guide's health from the per-draw statistics its Markov steps exported."""
    if "sample_stats" not in dt.children:
        return None
    stats = dt["sample_stats"]
    recorded = {
        name: stats[name].values for name in ("acceptance_rate", "step_size") if name in stats
    }
    if not recorded or not all("step" in stats[name].dims for name in recorded):
        return None
    guide = str(dt.attrs.get("guide", "the guide"))
    cap = stats.attrs.get("step_size_max")
    return health_from_stats(guide, recorded, None if cap is None else float(cap))


def loo_verdict(loo: Any) -> str:
    """One line on whether a LOO estimate can be trusted: how many Pareto k values exceed the
    reliability threshold, out of how many observations."""
    k = np.asarray(loo.pareto_k).ravel()
    threshold = pareto_threshold(loo)
    bad = int((k > threshold).sum())
    if not bad:
        return f"LOO reliable: all {k.size} Pareto k below {threshold:.2f} (max {k.max():.2f})"
    return (
        f"LOO unreliable: {bad} of {k.size} Pareto k above {threshold:.2f} (max {k.max():.2f}); "
        "elpd_loo and p_loo are not to be trusted: improve the guide (k-hat above), or use "
        "K-fold cross-validation"
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
    if report.divergences is not None:
        print(f"divergent transitions: {report.divergences}")
    if report.health is not None:
        print(report.health.describe())
        for problem in report.health.problems:
            print(f"  {problem}")
    if report.loo is not None:
        loo = report.loo
        print(f"elpd_loo {loo.elpd:.2f} (SE {loo.se:.2f}), p_loo {loo.p:.2f}")
        print(loo_verdict(loo))
    print("wrote", ", ".join(path.name for path in report.files))
