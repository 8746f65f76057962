"""Bayesian neural networks: the model (``model``), priors, the Bayes-by-backprop guide, the
posterior predictive (``predict``), the DataTree export and the fitting job.

The names below come from :mod:`pyroext.models.bnn.model`.
"""

from pyroext.models.bnn.model import *  # noqa: F403
from pyroext.models.bnn.model import __all__ as __all__
