"""PSIS-LOO for variational approximations, corrected for the gap between guide and posterior.

Plain PSIS-LOO assumes draws from the exact posterior. Magnusson et al. (2019) reweight guide
draws by ``p(y, theta) / q(theta)`` before leaving each observation out, which is what
:func:`arviz_stats.loo_approximate_posterior` does; :func:`vi_loo` feeds it the per-draw
``lp`` and ``lq`` that :func:`pyroext.arviz.from_pyro_svi` stores in ``sample_stats``.
"""

__all__ = ["vi_loo"]

import math

import arviz_stats
import numpy as np
import xarray as xr
from arviz_stats import ELPDData

from pyroext.diagnostics.khat import MIN_SAMPLES

SAMPLE_DIMS = ("chain", "draw")


def vi_loo(dt: xr.DataTree, pointwise: bool = True, var_name: str | None = None) -> ELPDData:
    """PSIS-LOO of a fitted guide with the approximate-posterior correction.

    Arguments:
        dt: A DataTree with a ``log_likelihood`` group and ``sample_stats`` variables ``lp``
            (``log p(y, theta)``) and ``lq`` (``log q(theta)``), all evaluated at the same
            guide draws and stored with ``chain`` and ``draw`` dims (``chain=1`` for VI).
        pointwise: Also return the pointwise ``elpd_i`` and Pareto ``k`` values.
        var_name: The ``log_likelihood`` variable to use; needed when there are several.

    Returns:
        The :class:`arviz_stats.utils.ELPDData` of
        :func:`arviz_stats.loo_approximate_posterior` (``elpd``, ``se``, ``p``, ``pareto_k``,
        ``good_k``, ...).

    Raises:
        ValueError: If ``log_likelihood``, ``lp`` or ``lq`` is missing, they lack the
            ``chain`` and ``draw`` dims or differ in their numbers of draws, there are fewer
            than 30 draws (PSIS fits a Pareto tail to the largest ratios), or a value is NaN
            or infinite (the message names the variables and counts).

    References:
        Magnusson, Andersen, Jonasson, Vehtari. "Bayesian leave-one-out cross-validation for
        large data". ICML 2019. https://arxiv.org/abs/1904.10679
    """
    if "log_likelihood" not in dt.children:
        raise ValueError(
            "vi_loo needs a log_likelihood group: the pointwise log p(y_i | theta) at the "
            "guide draws are what is left out"
        )
    stats = dt.get("sample_stats")
    missing = [name for name in ("lp", "lq") if stats is None or name not in stats]
    if missing:
        raise ValueError(
            "vi_loo needs sample_stats variables lp (log p(y, theta)) and lq (log q(theta)) "
            "at the guide draws, to reweight them towards the exact posterior; missing: "
            + ", ".join(missing)
        )
    arrays = {
        "sample_stats.lp": stats["lp"],
        "sample_stats.lq": stats["lq"],
        **{f"log_likelihood.{name}": var for name, var in dt["log_likelihood"].items()},
    }
    _check_draws(arrays)
    return arviz_stats.loo_approximate_posterior(
        dt, stats["lp"], stats["lq"], pointwise=pointwise, var_name=var_name
    )


def _check_draws(arrays: dict[str, xr.DataArray]) -> None:
    """Refuses inputs on which PSIS would fail deep inside, or return NaN without a word."""
    for name, array in arrays.items():
        if not set(SAMPLE_DIMS) <= set(array.dims):
            raise ValueError(
                f"{name} has dims {array.dims}, but arviz_stats' LOO hard-codes the sample "
                "dims ('chain', 'draw'); store variational draws as chain=1, draw=S"
            )
    shapes = {
        name: tuple(array.sizes[dim] for dim in SAMPLE_DIMS) for name, array in arrays.items()
    }
    if len(set(shapes.values())) > 1:
        listed = ", ".join(f"{name} {shape}" for name, shape in shapes.items())
        raise ValueError(f"vi_loo needs the same (chain, draw) sizes everywhere; got {listed}")
    draws = math.prod(shapes["sample_stats.lp"])
    if draws < MIN_SAMPLES:
        raise ValueError(
            f"vi_loo needs at least {MIN_SAMPLES} draws (PSIS fits a Pareto tail to the largest "
            f"importance ratios), got {draws}; export more, e.g. from_pyro_svi(num_samples=1000)"
        )
    counts = {name: int((~np.isfinite(array.values)).sum()) for name, array in arrays.items()}
    bad = {name: count for name, count in counts.items() if count}
    if bad:
        listed = ", ".join(f"{name}: {count}" for name, count in bad.items())
        raise ValueError(
            f"vi_loo needs finite values, but some are NaN or infinite ({listed}, of {draws} "
            "draws); drop those draws (pyroext.diagnostics.drop_nonfinite_draws) or refit"
        )
