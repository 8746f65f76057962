"""PSIS-LOO for variational approximations, corrected for the gap between guide and posterior.

Plain PSIS-LOO assumes draws from the exact posterior. Magnusson et al. (2019) reweight guide
draws by ``p(y, theta) / q(theta)`` before leaving each observation out, which is what
:func:`arviz_stats.loo_approximate_posterior` does; :func:`vi_loo` feeds it the per-draw
``lp`` and ``lq`` that :func:`pyroext.arviz.from_pyro_svi` stores in ``sample_stats``.
"""

__all__ = ["vi_loo"]

import arviz_stats
import xarray as xr
from arviz_stats import ELPDData

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
        ValueError: If ``log_likelihood``, ``lp`` or ``lq`` is missing, or they lack the
            ``chain`` and ``draw`` dims.

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
    for name, array in arrays.items():
        if not set(SAMPLE_DIMS) <= set(array.dims):
            raise ValueError(
                f"{name} has dims {array.dims}, but arviz_stats' LOO hard-codes the sample "
                "dims ('chain', 'draw'); store variational draws as chain=1, draw=S"
            )
    return arviz_stats.loo_approximate_posterior(
        dt, stats["lp"], stats["lq"], pointwise=pointwise, var_name=var_name
    )
