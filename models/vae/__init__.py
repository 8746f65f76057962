"""Variational autoencoder: networks and the model/guide pair (``model``), the test log-likelihood
(``eval``), gradient estimators, the MCMC-enriched VAEs, the fitting job and its figure.

The names below come from :mod:`pyroext.models.vae.model`.
"""

__all__ = [
    "OBJECTIVES",
    "VAE",
    "ConvDecoder",
    "ConvEncoder",
    "MLPDecoder",
    "MLPEncoder",
    "check_batch",
    "data_plate",
    "vae_loss",
]

from pyroext.models.vae.model import (
    OBJECTIVES,
    VAE,
    ConvDecoder,
    ConvEncoder,
    MLPDecoder,
    MLPEncoder,
    check_batch,
    data_plate,
    vae_loss,
)
