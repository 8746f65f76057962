"""Diagnostics for variational inference with Pyro: does the guide work?

* :func:`vi_khat` / :func:`vi_khat_from_model`: Pareto k-hat of the importance ratios
  ``p(y, theta) / q(theta)`` (Yao et al. 2018).
* :func:`vi_loo`: PSIS-LOO corrected for the approximate posterior (Magnusson et al. 2019).
* :func:`vsbc` / :func:`plot_vsbc`: variational simulation-based calibration (Yao et al. 2018).
* :func:`drop_nonfinite_draws`: a tree without the draws that hold NaN or infinite values.

The DataTree-based functions read what :func:`pyroext.arviz.from_pyro_svi` exports: draws with
``chain`` and ``draw`` dims and per-draw ``lp`` and ``lq`` in ``sample_stats``.
"""

__all__ = [
    "KhatResult",
    "NonFiniteDraws",
    "VSBCResult",
    "drop_nonfinite_draws",
    "khat_from_log_ratios",
    "khat_threshold",
    "plot_vsbc",
    "vi_khat",
    "vi_khat_from_model",
    "vi_loo",
    "vsbc",
]

from pyroext.diagnostics.draws import NonFiniteDraws, drop_nonfinite_draws
from pyroext.diagnostics.khat import (
    KhatResult,
    khat_from_log_ratios,
    khat_threshold,
    vi_khat,
    vi_khat_from_model,
)
from pyroext.diagnostics.loo import vi_loo
from pyroext.diagnostics.vsbc import VSBCResult, plot_vsbc, vsbc
