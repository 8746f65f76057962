"""Variational autoencoder: networks and the model/guide pair (``model``), the test log-likelihood
(``eval``), gradient estimators, the MCMC-enriched VAEs, the fitting job and its figure.

The names below come from :mod:`pyroext.models.vae.model`.
"""

from pyroext.models.vae.model import *  # noqa: F403
from pyroext.models.vae.model import __all__ as __all__
