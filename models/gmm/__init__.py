"""Gaussian mixture: the Pyro models and guides (``model``), EM and CAVI references (``em``,
``vb``), label switching (``labels``), the fitting job and its figure.

The names below come from :mod:`pyroext.models.gmm.model`.
"""

__all__ = [
    "COVARIANCES",
    "check_gmm_options",
    "component_distribution",
    "gmm_marginal_model",
    "gmm_model",
    "init_from_data",
    "mean_field_guide",
    "mixture_log_likelihood",
    "responsibilities",
]

from pyroext.models.gmm.model import (
    COVARIANCES,
    check_gmm_options,
    component_distribution,
    gmm_marginal_model,
    gmm_model,
    init_from_data,
    mean_field_guide,
    mixture_log_likelihood,
    responsibilities,
)
