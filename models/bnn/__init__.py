"""Bayesian neural networks: the model (``model``), priors, the Bayes-by-backprop guide, the
posterior predictive (``predict``), the DataTree export and the fitting job.

The names below come from :mod:`pyroext.models.bnn.model`.
"""

__all__ = [
    "LIKELIHOODS",
    "LOCAL_REPARAMETERIZATION",
    "BayesianMLP",
    "GaussianPrior",
    "Prior",
    "ScaleMixturePrior",
    "relu_mlp",
]

from pyroext.models.bnn.model import (
    LIKELIHOODS,
    LOCAL_REPARAMETERIZATION,
    BayesianMLP,
    GaussianPrior,
    Prior,
    ScaleMixturePrior,
    relu_mlp,
)
