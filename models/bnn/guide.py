"""Bayes by backprop: the mean-field Gaussian guide of a :class:`~pyroext.models.bnn.BayesianMLP`.

Every weight has its own ``N(mu, softplus(rho)^2)`` factor, the means starting at the
deterministic network's initial weights and the scales at a small ``init_scale``, so that
training starts close to the ordinary network. The guide samples the weight sites directly (no
auxiliary sites), so :class:`~pyro.infer.TraceMeanField_ELBO` uses the closed-form KL divergence
to a :class:`~pyroext.models.bnn.GaussianPrior` and a Monte Carlo estimate for a
:class:`~pyroext.models.bnn.ScaleMixturePrior`, and :class:`~pyro.infer.Trace_ELBO` estimates
every term by Monte Carlo.
"""

__all__ = ["AutoBayesByBackprop"]

import pyro
import pyro.distributions as dist
from pyro import poutine
from pyro.infer.autoguide import AutoNormal
from torch import Tensor

from pyroext.models.bnn.model import LOCAL_REPARAMETERIZATION, BayesianMLP


class AutoBayesByBackprop(AutoNormal):
    """Mean-field Gaussian guide over all weights and biases of a Bayesian MLP.

    The scales are ``softplus(rho)`` (:class:`~pyro.infer.autoguide.AutoNormal`'s
    ``softplus_positive`` constraint), so the optimiser steps ``mu`` and ``rho`` as in
    Blundell et al. It works with :class:`~pyro.infer.SVI`, :class:`~pyro.infer.Predictive`
    (``parallel=False``), ``median``/``quantiles`` and :func:`pyroext.guides.gaussian_moments`.

    With ``local_reparameterization=True`` the model samples each linear layer's pre-activations
    ``b = x W^T + c`` per data point from their law under the guide,
    ``N(x mu_W^T + mu_c, x^2 (sigma_W^2)^T + sigma_c^2)``, instead of computing them from one
    draw of the weights shared by the whole batch (Kingma et al., 2015). Each data point's
    pre-activations have the same distribution either way, so the expected ELBO is unchanged,
    while the gradient variance drops because the batch's terms become independent. The guide
    still draws the weights: they carry the KL term, estimated at weights drawn independently of
    the pre-activation noise (closed form instead under ``TraceMeanField_ELBO`` with a Gaussian
    prior). That keeps the estimator unbiased for any prior, including the scale mixture, whose
    KL divergence from a Gaussian has no closed form. Prediction helpers and
    :class:`~pyro.infer.Predictive` condition the model on weight draws, so they sample whole
    functions whatever this option.

    As with Pyro's autoguides, the parameters live in Pyro's global param store (as
    ``AutoBayesByBackprop.locs.<site>`` and ``AutoBayesByBackprop.scales.<site>``), so two
    guides of the same network share them unless the store is cleared between fits or
    ``pyro.settings.set(module_local_params=True)`` is in force.

    Arguments:
        model: The Bayesian network.
        init_scale: Initial standard deviation of every factor, > 0.
        local_reparameterization: Sample pre-activations instead of weights in the model. It
            is an attribute and may be switched between steps.

    Raises:
        TypeError: If ``model`` is not a :class:`~pyroext.models.bnn.BayesianMLP`.
        ValueError: If ``init_scale`` is not a finite number > 0.

    References:
        Blundell, C., Cornebise, J., Kavukcuoglu, K. and Wierstra, D. (2015). Weight uncertainty
        in neural networks. ICML.
        Kingma, D. P., Salimans, T. and Welling, M. (2015). Variational dropout and the local
        reparameterization trick. NeurIPS.
    """

    def __init__(
        self,
        model: BayesianMLP,
        *,
        init_scale: float = 1e-2,
        local_reparameterization: bool = False,
    ) -> None:
        if not isinstance(model, BayesianMLP):
            raise TypeError(f"model must be a BayesianMLP, got {type(model).__name__}")
        if not 0 < float(init_scale) < float("inf"):
            raise ValueError(f"init_scale={init_scale} must be a finite number > 0")
        self.local_reparameterization = local_reparameterization
        # Hiding the observations keeps them out of the guide's latents even when it is first
        # called without targets, as the prediction helpers do.
        super().__init__(
            poutine.block(model, hide=["obs"]),
            init_loc_fn=model.init_to_network,
            init_scale=float(init_scale),
        )

    def forward(self, *args: object, **kwargs: object) -> dict[str, Tensor]:
        """Draws every weight and bias; the arguments are the model's.

        Returns:
            ``{site: value}``.
        """
        if self.prototype_trace is None:
            self._setup_prototype(*args, **kwargs)
        values = {}
        for name, (loc, scale) in self.locs_and_scales().items():
            infer = (
                {LOCAL_REPARAMETERIZATION: (loc, scale)} if self.local_reparameterization else {}
            )
            factor = dist.Normal(loc, scale).to_event(loc.ndim)
            values[name] = pyro.sample(name, factor, infer=infer)
        return values

    def locs_and_scales(self) -> dict[str, tuple[Tensor, Tensor]]:
        """``(mu, sigma)`` of every site's factor, in the model's sample order.

        Raises:
            RuntimeError: If the guide has not been called yet (its parameters are created on
                the first call).
        """
        if self.prototype_trace is None:
            raise RuntimeError("call the guide once (e.g. one SVI step) before reading it")
        return {
            name: self._get_loc_and_scale(name)
            for name, _ in self.prototype_trace.iter_stochastic_nodes()
        }
