"""Draws with non-finite values: which there are, and a tree without them.

One NaN draw turns a summary row into NaN, and a NaN (or ``+inf``) log density poisons k-hat
and LOO without a word. :func:`drop_nonfinite_draws` takes out every draw with a non-finite
value in a posterior variable, in ``sample_stats.lp``/``lq`` or in the pointwise
log-likelihood, from all groups that share the posterior's draws, and says how many it took
and where they were.
"""

__all__ = ["POSTERIOR_GROUPS", "NonFiniteDraws", "drop_nonfinite_draws", "nonfinite_draws"]

from typing import NamedTuple

import numpy as np
import xarray as xr

SAMPLE_DIMS = ("chain", "draw")
POSTERIOR_GROUPS = (
    "posterior",
    "unconstrained_posterior",
    "sample_stats",
    "log_likelihood",
    "posterior_predictive",
    "predictions",
)
"""The groups indexed by the posterior's draws (``prior`` has draws of its own)."""
CHECKED = {"posterior": None, "log_likelihood": None, "sample_stats": ("lp", "lq")}
"""The variables whose non-finite values disqualify a draw, by group (None: all of them)."""


class NonFiniteDraws(NamedTuple):
    """Where a tree's draws hold non-finite values.

    Fields:
        draws: Positions along ``draw`` with a non-finite value in some chain.
        total: Number of draws (positions along ``draw``).
        counts: Non-finite values by ``group.variable``, only those with any.
    """

    draws: np.ndarray
    total: int
    counts: dict[str, int]

    def describe(self) -> str:
        """One line: how many draws, and the variables with their counts."""
        where = ", ".join(f"{name}: {count}" for name, count in self.counts.items())
        return f"{len(self.draws)} of {self.total} draws have non-finite values ({where})"


def nonfinite_draws(dt: xr.DataTree) -> NonFiniteDraws:
    """Finds the draws with a NaN or infinite value in the variables that diagnostics use.

    Arguments:
        dt: A DataTree with ``chain`` and ``draw`` dims in its posterior groups.

    Returns:
        A :class:`NonFiniteDraws` (empty ``draws`` when all values are finite).
    """
    bad, counts = None, {}
    for group, names in CHECKED.items():
        if group not in dt.children:
            continue
        dataset = dt[group].to_dataset()
        for name in names or list(dataset.data_vars):
            variable = dataset.get(name)
            if variable is None or not _sampled(variable):
                continue
            nonfinite = ~np.isfinite(variable)
            if int(nonfinite.sum()):
                counts[f"{group}.{name}"] = int(nonfinite.sum())
            per_draw = nonfinite.any([d for d in variable.dims if d != "draw"])
            bad = per_draw if bad is None else bad | per_draw
    total = 0 if bad is None else int(bad.sizes["draw"])
    draws = np.flatnonzero(bad.values) if bad is not None else np.array([], dtype=int)
    return NonFiniteDraws(draws, total, counts)


def drop_nonfinite_draws(dt: xr.DataTree) -> tuple[xr.DataTree, NonFiniteDraws]:
    """The tree without the draws that :func:`nonfinite_draws` finds.

    Arguments:
        dt: A DataTree with ``chain`` and ``draw`` dims in its posterior groups.

    Returns:
        The tree with those draws removed from every group of :data:`POSTERIOR_GROUPS` (from
        all chains, so that chains keep equal lengths), and what was removed; ``dt`` itself
        when nothing was.

    Raises:
        ValueError: If every draw has a non-finite value.
    """
    found = nonfinite_draws(dt)
    if not len(found.draws):
        return dt, found
    if len(found.draws) == found.total:
        raise ValueError(f"all draws are unusable: {found.describe()}; the fit diverged")
    keep = np.setdiff1d(np.arange(found.total), found.draws)
    out = dt.copy()
    for group in POSTERIOR_GROUPS:
        if group in dt.children and "draw" in dt[group].dims:
            out[group] = dt[group].to_dataset().isel(draw=keep)
    return out, found


def _sampled(variable: xr.DataArray) -> bool:
    """Whether the variable has the sample dims and can hold non-finite values."""
    return set(SAMPLE_DIMS) <= set(variable.dims) and variable.dtype.kind in "fc"
