"""Bayesian linear regression: three Pyro models and their exact references.

All models share the parameterisation ``theta = (w, b)``: weights ``w`` of shape ``(D,)``,
sampled first at site ``"w"``, then a scalar bias at site ``"b"``, and observations
``y ~ Normal(x @ w + b, noise)`` at site ``"obs"`` inside ``pyro.plate("data", N)``. The
exact references use the design ``Phi = [x, 1]`` with the bias column last, so that
``theta = cat([w, b])``, which is also the order in which Pyro's ``AutoContinuous`` guides
flatten the latents.

* :func:`model_known_noise`: Gaussian prior, known noise; exact Gaussian posterior
  (:func:`conjugate_posterior`, :func:`log_evidence_known_noise`).
* :func:`model_hyperprior`: Gamma hyperprior on the prior precision ``alpha``; mean-field
  variational Bayes (:func:`vb_hyperprior`) and the exact evidence by quadrature
  (:func:`log_evidence_hyperprior`).
* :func:`model_unknown_noise`: Normal-Gamma prior on ``(theta, tau)``; exact Normal-Gamma
  posterior with Student-t marginal (:func:`normal_gamma_posterior`,
  :func:`log_evidence_unknown_noise`).

The models follow the dtype and device of ``x``.
"""

__all__ = [
    "GaussianPosterior",
    "NormalGammaPosterior",
    "VBResult",
    "conjugate_posterior",
    "kl_gaussian",
    "log_evidence_hyperprior",
    "log_evidence_known_noise",
    "log_evidence_unknown_noise",
    "mean_field_optimum",
    "model_hyperprior",
    "model_known_noise",
    "model_unknown_noise",
    "normal_gamma_posterior",
    "posterior_predictive",
    "predictive_interval_known_noise",
    "vb_hyperprior",
]

from pyroext.models.linear_regression.exact import (
    GaussianPosterior,
    NormalGammaPosterior,
    conjugate_posterior,
    kl_gaussian,
    log_evidence_known_noise,
    log_evidence_unknown_noise,
    mean_field_optimum,
    normal_gamma_posterior,
    predictive_interval_known_noise,
)
from pyroext.models.linear_regression.hyperprior import (
    VBResult,
    log_evidence_hyperprior,
    vb_hyperprior,
)
from pyroext.models.linear_regression.model import (
    model_hyperprior,
    model_known_noise,
    model_unknown_noise,
    posterior_predictive,
)
